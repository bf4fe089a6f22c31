"""Start, first requests and stop, as a person runs the service (#19):

    python -m loadtests.lifecycle --rounds 3

Each round starts `stt serve` as `make run` runs it (tiny.en and base, the embedded PostgreSQL,
HAProxy in front, warm-up on), waits for /api/v1/ready, runs three passes of the bench's short
files at concurrency 16 (the first right after ready), then sends SIGTERM and times the exit;
after it, any process of the instance (its PostgreSQL included) or listening port it had is
reported. One more round runs with STT_WARMUP=false, to show what the warm-up buys, and is
stopped with Ctrl-C (SIGINT to its process group, as a terminal sends it), and one more with a
SIGTERM to the whole group (`kill -TERM -PGID`; Ray's own processes get it too); then `serve run
serve_config.yaml` is started and stopped with Ctrl-C the same way, once with a database given
and once with the embedded one. Writes docs/lifecycle.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from loadtests import corpus as corpus_mod
from loadtests.bench import service_run
from testkit.process import ServiceProcess, fresh_database

DOCS = Path(__file__).resolve().parents[1] / "docs"


MAKE_RUN = {"STT_MODELS": "tiny.en,base"}  # what `make run` serves (ServiceProcess's default is tiny.en)


def _postgres_of(service: ServiceProcess) -> list[str]:
    pgdata = str(service.env_data_dir / "pgdata")
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True).stdout
    return [line.strip() for line in out.splitlines() if pgdata in line]


def _end(service: ServiceProcess) -> dict:
    """Kill what is still running of ``service`` (by pid), after saying what was left."""
    if service.proc.poll() is None:
        service.proc.kill()
        service.proc.wait()
    left = {"processes": service.leftovers(), "listening": service.listening(), "postgres": _postgres_of(service)}
    service.kill_leftovers()
    for line in left["postgres"]:
        os.kill(int(line.split()[0]), signal.SIGKILL)
    return left


STOPS = {
    "SIGTERM": (signal.SIGTERM, False),
    "Ctrl-C (SIGINT to the group)": (signal.SIGINT, True),
    "SIGTERM to the group": (signal.SIGTERM, True),
}


def one_round(warmup: bool, short: dict, passes: int = 3, stop: str = "SIGTERM") -> dict:
    with tempfile.TemporaryDirectory(prefix="stt-lifecycle-") as folder:
        service = ServiceProcess(Path(folder), None, env=MAKE_RUN | {"STT_WARMUP": str(warmup).lower()})
        started = time.monotonic()
        service.start()
        try:
            service.wait_ready()
            ready_s = time.monotonic() - started
            xrt = [round(service_run(service.url, short, 16).xrt, 1) for _ in range(passes)]
            sig, group = STOPS[stop]
            stop_s = service.stop(sig=sig, group=group)
        finally:
            left = _end(service)
    steady = statistics.median(xrt[1:])
    return {
        "warmup": warmup,
        "stop_signal": stop,
        "ready_s": round(ready_s, 1),
        "c16_xrt": xrt,
        "first_over_steady": round(xrt[0] / steady, 3),
        "stop_s": round(stop_s, 1),
        "left": left,
    }


def serve_run_round(dsn: str | None) -> dict:
    """`serve run serve_config.yaml` stopped with Ctrl-C; ``dsn`` None: the embedded database."""
    with tempfile.TemporaryDirectory(prefix="stt-lifecycle-") as folder:
        service = ServiceProcess(Path(folder), dsn, command="serve-run")
        started = time.monotonic()
        service.start()
        stop_s: float | str = "no stop"
        try:
            service.wait_ready()
            ready_s = time.monotonic() - started
            try:
                stop_s = round(service.stop(timeout=120, sig=signal.SIGINT), 1)
            except subprocess.TimeoutExpired:
                stop_s = "still running 120 s after Ctrl-C (killed)"
        finally:
            left = _end(service)
    return {"database": "given" if dsn else "embedded", "ready_s": round(ready_s, 1), "stop_s": stop_s, "left": left}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve-run-only", action="store_true", help="redo only the serve run rounds")
    args = parser.parse_args()
    if args.serve_run_only:
        report = json.loads((DOCS / "lifecycle.json").read_text())
        with fresh_database() as url:
            given = serve_run_round(url)
        report["serve_run"] = [given, serve_run_round(None)]
        print(json.dumps(report["serve_run"]), flush=True)
        summarize(report)
        return
    short = {k: v for k, v in corpus_mod.build().items() if v["seconds"] < 30}
    report: dict = {"rounds": []}
    for _ in range(args.rounds):
        report["rounds"].append(one_round(True, short))
        print(json.dumps(report["rounds"][-1]), flush=True)
    report["without_warmup"] = one_round(False, short, stop="Ctrl-C (SIGINT to the group)")
    print(json.dumps(report["without_warmup"]), flush=True)
    report["group_sigterm"] = one_round(True, short, passes=2, stop="SIGTERM to the group")
    print(json.dumps(report["group_sigterm"]), flush=True)
    with fresh_database() as url:  # the machine's PostgreSQL, a database of its own
        given = serve_run_round(url)
    report["serve_run"] = [given, serve_run_round(None)]
    print(json.dumps(report["serve_run"]), flush=True)
    summarize(report)


def summarize(report: dict) -> None:
    rounds = report["rounds"]
    stopped = [*rounds, report["without_warmup"], *([report["group_sigterm"]] if "group_sigterm" in report else [])]
    report["summary"] = {
        "ready_s_median": statistics.median(r["ready_s"] for r in rounds),
        "first_over_steady_median": statistics.median(r["first_over_steady"] for r in rounds),
        "stop_s_max": max(r["stop_s"] for r in rounds),
        "ctrl_c_stop_s": report["without_warmup"]["stop_s"],
        "group_sigterm_stop_s": report.get("group_sigterm", {}).get("stop_s"),
        "anything_left": any(any(r["left"].values()) for r in [*stopped, *report["serve_run"]]),
    }
    print(json.dumps(report["summary"]))
    (DOCS / "lifecycle.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
