"""Hours of audio as async jobs: accuracy, memory, time to the first text, speed, progress, bombs.

    python -m loadtests.long_audio [--long-minutes 120] [--short-minutes 10]

Starts its own service (cpu profile, local Ray, temporary data). Builds one recording of
``--short-minutes`` and one of ``--long-minutes`` from the speech fixtures (mp3, 32 kbit/s:
testkit/recordings.py) and submits each as an async job (tiny.en, English), reading its events
stream (GET /api/v1/transcriptions/{id}/events) as it runs; samples the resident memory of the
Preprocessor and Transcriber replicas every 0.2 s. Then the same speech as short files (sync)
for the WER baseline, the bench corpus at concurrency 1 for the x-real-time baseline, and a
decompression bomb. Prints the figures; writes docs/long_audio.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx  # noqa: E402

from loadtests import corpus as corpus_mod  # noqa: E402
from loadtests.bench import service_run, start_service  # noqa: E402
from testkit.recordings import SENTENCES, bomb, long_recording  # noqa: E402
from testkit.speech import audio, corpus_wer, transcripts, wer  # noqa: E402

DOCS = Path(__file__).resolve().parents[1] / "docs"
FORM = {"model": "tiny.en", "language": "en"}
WATCHED = ("Preprocessor", "Transcriber-tiny-en")


def replica_pids() -> dict[str, list[int]]:
    """The processes of each watched deployment's replicas, by the title Ray gives them
    (ray::ServeReplica:<app>:<deployment>)."""
    pids: dict[str, list[int]] = {name: [] for name in WATCHED}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            title = (proc / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        for name in WATCHED:
            if title.startswith(f"ray::ServeReplica:speechtotext:{name}"):
                pids[name].append(int(proc.name))
    return pids


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class MemoryWatch:
    """Peak resident memory of each watched deployment's replicas (summed) while running."""

    def __init__(self):
        self.pids = replica_pids()
        self.peak = {name: 0.0 for name in WATCHED}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            for name, pids in self.pids.items():
                self.peak[name] = max(self.peak[name], sum(rss_mb(p) for p in pids))
            time.sleep(0.2)

    def now(self) -> dict[str, float]:
        return {name: round(sum(rss_mb(p) for p in pids), 1) for name, pids in self.pids.items()}

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def long_job(url: str, data: bytes, reference: str, seconds: float, name: str) -> dict:
    with httpx.Client(base_url=url, timeout=None) as client, MemoryWatch() as memory:
        before = memory.now()
        started = time.perf_counter()
        r = client.post("/api/v1/transcriptions", files={"file": (name, data)}, data=FORM | {"sync": "false"})
        r.raise_for_status()
        job_id = r.json()["id"]
        first_partial, progress, partials, final, kind = None, [], 0, None, None
        with client.stream("GET", f"/api/v1/transcriptions/{job_id}/events") as events:
            for line in events.iter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    body = json.loads(line[6:])
                    if kind == "partial":
                        partials += 1
                        first_partial = first_partial or time.perf_counter() - started
                    elif kind == "progress":
                        progress.append(body["progress"])
                    elif kind in ("completed", "failed"):
                        final = body
                        break
        wall = time.perf_counter() - started
        job = client.get(f"/api/v1/transcriptions/{job_id}").json()
    assert final and final["status"] == "COMPLETED", final
    text = job["result"]["text"]
    return {
        "audio_seconds": round(seconds, 1),
        "file_mb": round(len(data) / 2**20, 2),
        "wall_s": round(wall, 1),
        "processing_s": round(job["result"]["processing_time"], 1),
        "x_real_time": round(seconds / wall, 1),
        "first_partial_s": round(first_partial, 2) if first_partial else None,
        "partials": partials,
        "progress_values": len(set(progress)),
        "progress_monotonic": progress == sorted(progress),
        "wer": round(wer(reference, text), 2),
        "rss_before_mb": before,
        "rss_peak_mb": {k: round(v, 1) for k, v in memory.peak.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--long-minutes", type=float, default=120)
    parser.add_argument("--short-minutes", type=float, default=10)
    args = parser.parse_args()
    short = long_recording(args.short_minutes * 60, "mp3")
    long = long_recording(args.long_minutes * 60, "mp3")
    figures: dict = {}
    with tempfile.TemporaryDirectory() as data_dir:
        url, stop = start_service(data_dir)
        try:
            with httpx.Client(base_url=url, timeout=900) as client:
                client.post("/api/v1/transcriptions", files={"file": ("w.wav", audio("harvard_01.wav"))}, data=FORM)
                pairs = []
                for name in SENTENCES:
                    r = client.post("/api/v1/transcriptions", files={"file": (name, audio(name))}, data=FORM)
                    pairs.append((transcripts()[name], r.json()["text"]))
                figures["short_files_wer"] = round(corpus_wer(pairs), 2)
            c1 = service_run(url, corpus_mod.build(), 1)
            figures["corpus_c1_x_real_time"] = round(c1.xrt, 1)
            print(json.dumps(figures), flush=True)
            figures["short"] = long_job(url, *short, name="ten-minutes.mp3")
            print(json.dumps(figures["short"]), flush=True)
            figures["long"] = long_job(url, *long, name="two-hours.mp3")
            print(json.dumps(figures["long"]), flush=True)
            with httpx.Client(base_url=url, timeout=900) as client, MemoryWatch() as memory:
                data = bomb()
                before = memory.now()
                started = time.perf_counter()
                r = client.post("/api/v1/transcriptions", files={"file": ("quiet.flac", data)}, data=FORM)
                figures["bomb"] = {
                    "file_kb": round(len(data) / 1024, 1),
                    "status": r.status_code,
                    "code": r.json()["error"]["code"],
                    "seconds": round(time.perf_counter() - started, 3),
                    "rss_before_mb": before,
                    "rss_peak_mb": {k: round(v, 1) for k, v in memory.peak.items()},
                }
        finally:
            stop()
    peak = lambda run: sum(run["rss_peak_mb"].values())  # noqa: E731
    figures["rss_ratio_long_vs_short"] = round(peak(figures["long"]) / peak(figures["short"]), 3)
    figures["wer_long_minus_short_files"] = round(figures["long"]["wer"] - figures["short_files_wer"], 2)
    (DOCS / "long_audio.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
