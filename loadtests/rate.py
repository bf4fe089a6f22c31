"""Short requests at the seed's rate (#19): requests a minute, latency and health while loaded,
and where the CPU goes per request.

    python -m loadtests.rate --rounds 3 [--seconds 60] [--concurrency 64 128]

Starts `stt serve` as a person does (embedded PostgreSQL, HAProxy, tiny.en), waits for
/api/v1/ready, then per round and concurrency keeps that many sync transcriptions of 4-5 s
clips (the Harvard sentences in tests/data) in flight for --seconds, while two probers
(processes of their own, at nice 0 and at the Ingress's nice -5) ask /api/v1/health five
times a second. CPU time of every process of the instance (found by the marker in its
environment) is read from /proc before and after, and reported per request by part: the
Transcriber is the decode; the rest (proxy, Ingress, Preprocessor, database, Ray) is the
per-request cost outside it. Writes docs/rate.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from testkit.process import ServiceProcess
from testkit.speech import audio

DOCS = Path(__file__).resolve().parents[1] / "docs"
CLIPS = [f"harvard_0{n}.wav" for n in range(1, 9)]  # 4.0-5.0 s each
TICK = os.sysconf("SC_CLK_TCK")
PROBE_NICE = (0, -5)  # a client on this box; one at the Ingress's priority (cpu profile)
PARTS = ("Transcriber", "Preprocessor", "Ingress", "haproxy", "postgres", "JobWorker", "ServeController", "raylet")
# Ray's own processes besides the raylet, by what their command lines hold.
RAY_PARTS = {
    "ProxyActor": "serve proxy",
    "gcs_server": "gcs",
    "dashboard/agent.py": "dashboard agent",
    "runtime_env/agent": "runtime env agent",
    "dashboard/dashboard.py": "dashboard",
    "log_monitor": "log monitor",
    "-m cli serve": "stt (driver)",
}


def part_of(cmdline: str) -> str:
    for part in PARTS:
        if part in cmdline:
            return part
    for needle, part in RAY_PARTS.items():
        if needle in cmdline:
            return part
    return "other"


def cpu_by_part(service: ServiceProcess) -> dict[int, tuple[str, float]]:
    """pid -> (part, CPU seconds so far) for every process of the instance: those with its
    marker in their environment, and the embedded PostgreSQL (pgserver starts it with an
    environment of its own): the postmaster of the instance's data directory and its children."""
    needle = f"STT_LIFECYCLE_TEST={service.marker}".encode()
    pgdata = (service.env["STT_DATA_DIR"] + "/pgdata").encode()
    seen: dict[int, tuple[str, float, int]] = {}  # pid -> (part or "", CPU seconds, parent)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cpu, parent = (int(fields[11]) + int(fields[12])) / TICK, int(fields[1])
            if pgdata in raw:
                part = "postgres"
            elif needle in (entry / "environ").read_bytes().split(b"\0"):
                part = part_of(raw.replace(b"\0", b" ").decode(errors="replace"))
            else:
                part = ""
            seen[int(entry.name)] = (part, cpu, parent)
        except (OSError, IndexError, ValueError):
            continue
    postmasters = {pid for pid, (part, _, _) in seen.items() if part == "postgres"}
    out = {}
    for pid, (part, cpu, parent) in seen.items():
        if not part and parent in postmasters:
            part = "postgres"  # a backend, the WAL writer, the checkpointer...
        if part:
            out[pid] = (part, cpu)
    return out


def cpu_delta(before: dict, after: dict) -> dict[str, float]:
    spent: dict[str, float] = {}
    for pid, (part, seconds) in after.items():
        spent[part] = spent.get(part, 0.0) + seconds - before.get(pid, (part, 0.0))[1]
    return spent


async def load(url: str, concurrency: int, seconds: float) -> dict:
    bodies = [(name, audio(name)) for name in CLIPS]
    latencies: list[float] = []
    errors: dict[str, int] = {}
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def worker(n: int) -> None:
            i = n
            while time.monotonic() < deadline:
                name, data = bodies[i % len(bodies)]
                i += 1
                started = time.perf_counter()
                try:
                    files, form = {"file": (name, data)}, {"model": "tiny.en"}
                    r = await client.post("/api/v1/transcriptions", files=files, data=form)
                    if r.status_code == 200:
                        latencies.append(time.perf_counter() - started)
                        continue
                    try:
                        key = f"{r.status_code} {r.json()['error']['code']}"
                    except (ValueError, KeyError, TypeError):
                        key = str(r.status_code)
                except httpx.HTTPError as exc:
                    key = type(exc).__name__
                errors[key] = errors.get(key, 0) + 1

        # The health probers run in processes of their own, as monitors would (in this event
        # loop, beside 64-128 uploads, one measured the load generator's own delays): one at
        # the default priority, a client sharing these 2 cores with the service; one at the
        # Ingress's (nice -5), standing in for a client on another machine, whose wait for a
        # CPU of its own is not the service's time.
        context = multiprocessing.get_context("spawn")
        probes = {}
        for nice in PROBE_NICE:
            answers = context.Queue()
            probe = context.Process(target=prober, args=(url, seconds, nice, answers), daemon=True)
            probe.start()
            probes[nice] = (probe, answers)
        started = time.monotonic()
        await asyncio.gather(*(worker(n) for n in range(concurrency)))
        wall = time.monotonic() - started
        health = {}
        for nice, (probe, answers) in probes.items():
            health[nice] = await asyncio.to_thread(answers.get, True, seconds + 60)
            await asyncio.to_thread(probe.join, 10)
    q = statistics.quantiles
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": errors,
        "per_minute": round(len(latencies) * 60 / wall),
        "p50_ms": round(statistics.median(latencies) * 1000),
        "p95_ms": round(q(latencies, n=20)[18] * 1000),
        "health_p50_ms": round(statistics.median(health[0][0]) * 1000, 1),
        "health_p95_ms": round(q(health[0][0], n=20)[18] * 1000, 1),
        "health_failures": health[0][1],
        "health_at_ingress_priority_p50_ms": round(statistics.median(health[-5][0]) * 1000, 1),
        "health_at_ingress_priority_p95_ms": round(q(health[-5][0], n=20)[18] * 1000, 1),
        "health_at_ingress_priority_failures": health[-5][1],
    }


def prober(url: str, seconds: float, nice: int, answers) -> None:
    """GET /api/v1/health five times a second for ``seconds`` at priority ``nice``; puts
    (latencies, failures)."""
    os.setpriority(os.PRIO_PROCESS, 0, nice)
    latencies: list[float] = []
    failures: dict[str, int] = {}
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=url, timeout=30) as client:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                r = client.get("/api/v1/health")
                key = None if r.status_code == 200 else str(r.status_code)
            except httpx.HTTPError as exc:
                key = type(exc).__name__
            if key is None:
                latencies.append(time.perf_counter() - started)
            else:
                failures[key] = failures.get(key, 0) + 1
            time.sleep(max(0.0, 0.2 - (time.perf_counter() - started)))
    answers.put((latencies, failures))


def measure(service: ServiceProcess, concurrency: int, seconds: float) -> dict:
    before, mine = cpu_by_part(service), time.process_time()
    result = asyncio.run(load(service.url, concurrency, seconds))
    spent = cpu_delta(before, cpu_by_part(service))
    n = max(result["requests"], 1)
    # The client's share of the same 2 cores (uploads, JSON), not counted as the service's.
    result["load_generator_cpu_ms_per_request"] = round((time.process_time() - mine) * 1000 / n, 1)
    result["cpu_ms_per_request"] = {part: round(s * 1000 / n, 1) for part, s in sorted(spent.items())}
    result["cpu_ms_outside_decode"] = round(sum(s for p, s in spent.items() if p != "Transcriber") * 1000 / n, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[64, 128])
    args = parser.parse_args()
    report: dict = {"rounds": []}
    with tempfile.TemporaryDirectory(prefix="stt-rate-") as folder:
        service = ServiceProcess(Path(folder), None)
        service.start()
        try:
            service.wait_ready()
            asyncio.run(load(service.url, 16, 10))  # the first requests of a fresh database, pools
            for _ in range(args.rounds):
                for c in args.concurrency:
                    report["rounds"].append(measure(service, c, args.seconds))
                    print(json.dumps(report["rounds"][-1]), flush=True)
        finally:
            service.stop()
            service.kill_leftovers()
    report["median"] = {
        c: {
            key: statistics.median(r[key] for r in report["rounds"] if r["concurrency"] == c)
            for key in (
                "per_minute",
                "p95_ms",
                "health_p95_ms",
                "health_at_ingress_priority_p95_ms",
                "cpu_ms_outside_decode",
            )
        }
        for c in args.concurrency
    }
    print(json.dumps(report["median"], indent=1))
    (DOCS / "rate.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
