"""Autoscaling shown, not only configured: load that drives the Preprocessor and the JobWorker up
from their minimum and back down, with the replica counts over time from Serve's status API.

    python -m loadtests.autoscale [--load-seconds 150] [--idle-seconds 240] [--users 12]

Starts its own service (cpu profile, local Ray, temporary data), then:
- the Preprocessor's load: ``--users`` clients each uploading, again and again, five minutes of
  near-silence with one sentence in it (a long decode and VAD, little to transcribe), so its
  ongoing requests stay above ``target_ongoing_requests``;
- the JobWorker's load: async jobs of short speech submitted faster than they finish, so the
  PENDING backlog its policy scales on (deployments/autoscaling.py) grows;
then no load at all while the replicas come back down. Every second it records the RUNNING
replicas of each deployment, the uploads in flight and the backlog; writes docs/autoscaling.json
and docs/autoscaling.png and prints the figures.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import threading
import time
import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx  # noqa: E402
import numpy as np  # noqa: E402

from loadtests.bench import start_service  # noqa: E402
from serve_app.audio.decode import decode  # noqa: E402
from testkit.speech import audio  # noqa: E402

DOCS = Path(__file__).resolve().parents[1] / "docs"
WATCHED = ("Preprocessor", "JobWorker", "Transcriber-tiny-en", "Ingress")


def quiet_recording(seconds: float = 300.0) -> bytes:
    """A WAV of ``seconds`` of faint noise with one spoken sentence at the start."""
    rate = 16000
    speech = (decode(audio("harvard_01.wav")) * 32767).astype(np.int16)  # 16 kHz mono
    noise = (np.random.default_rng(0).standard_normal(int(seconds * rate)) * 30).astype(np.int16)
    noise[: speech.size] = speech
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(noise.tobytes())
    return out.getvalue()


class Load:
    def __init__(self, url: str, users: int):
        self.url, self.users = url, users
        self.stop = threading.Event()
        self.in_flight = 0
        self.done = {"uploads": 0, "jobs_submitted": 0, "errors": 0}
        self._lock = threading.Lock()
        self.recording = quiet_recording()

    def uploads(self) -> None:
        with httpx.Client(base_url=self.url, timeout=600) as client:
            while not self.stop.is_set():
                with self._lock:
                    self.in_flight += 1
                try:
                    r = client.post("/api/v1/transcriptions", files={"file": ("quiet.wav", self.recording)})
                    key = "uploads" if r.status_code == 200 else "errors"
                except httpx.HTTPError:
                    key = "errors"
                with self._lock:
                    self.in_flight -= 1
                    self.done[key] += 1

    def jobs(self, per_second: float) -> None:
        names = [f"harvard_0{i}.wav" for i in range(1, 9)]
        with httpx.Client(base_url=self.url, timeout=60) as client:
            n = 0
            while not self.stop.is_set():
                name = names[n % 8]
                r = client.post("/api/v1/transcriptions", files={"file": (name, audio(name))}, data={"sync": "false"})
                with self._lock:
                    self.done["jobs_submitted" if r.status_code == 202 else "errors"] += 1
                n += 1
                time.sleep(1 / per_second)


def replicas() -> dict[str, int]:
    from ray import serve

    deployments = serve.status().applications["speechtotext"].deployments
    return {name: deployments[name].replica_states.get("RUNNING", 0) for name in WATCHED if name in deployments}


def backlog(url: str) -> int:
    return httpx.get(f"{url}/api/v1/stats", timeout=30).json()["queue_depth"]


def plot(samples: list[dict], load_end: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t"] for s in samples]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    for name, color in (("Preprocessor", "#2a7"), ("JobWorker", "#27a")):
        top.step(t, [s["replicas"].get(name, 0) for s in samples], where="post", label=name, color=color)
    top.set_ylabel("running replicas")
    top.yaxis.get_major_locator().set_params(integer=True)
    top.set_ylim(0, max(max(s["replicas"].get(n, 0) for s in samples) for n in ("Preprocessor", "JobWorker")) + 1)
    top.legend(loc="upper right")
    bottom.plot(t, [s["in_flight"] for s in samples], label="sync uploads in flight", color="#2a7")
    bottom.plot(t, [s["backlog"] for s in samples], label="PENDING jobs", color="#27a")
    bottom.set_ylabel("load")
    bottom.set_xlabel("seconds")
    bottom.legend(loc="upper right")
    for ax in (top, bottom):
        ax.axvline(load_end, color="#999", linestyle="--")
    top.set_title("Autoscaling on 2 cores (cpu profile): load until the dashed line, then none")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def first(samples, name, test, after=0.0):
    return next((s["t"] for s in samples if s["t"] >= after and test(s["replicas"].get(name, 0))), None)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--load-seconds", type=float, default=150)
    parser.add_argument("--idle-seconds", type=float, default=240)
    parser.add_argument("--users", type=int, default=12)
    parser.add_argument("--jobs-per-second", type=float, default=3.0)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as data_dir:
        url, stop_service = start_service(data_dir)
        try:
            load = Load(url, args.users)
            samples: list[dict] = []
            started = time.monotonic()

            def sample():
                samples.append(
                    {
                        "t": round(time.monotonic() - started, 1),
                        "replicas": replicas(),
                        "in_flight": load.in_flight,
                        "backlog": backlog(url),
                    }
                )

            for _ in range(10):  # at rest first
                sample()
                time.sleep(1)
            pool = ThreadPoolExecutor(args.users + 1)
            for _ in range(args.users):
                pool.submit(load.uploads)
            pool.submit(load.jobs, args.jobs_per_second)
            load_start = time.monotonic() - started
            while time.monotonic() - started < load_start + args.load_seconds:
                sample()
                time.sleep(1)
            load.stop.set()
            load_end = time.monotonic() - started
            pool.shutdown(wait=True)  # the uploads in flight finish
            while time.monotonic() - started < load_end + args.idle_seconds:
                sample()
                time.sleep(1)
        finally:
            stop_service()

    lines = [f"load {load_start:.0f}-{load_end:.0f} s, then none until {samples[-1]['t']:.0f} s; {load.done}"]
    lines.append("| deployment | at rest | most during load | first scale-up at (s) | back at its minimum at (s) |")
    lines.append("|---|---|---|---|---|")
    for name in ("Preprocessor", "JobWorker"):
        rest = samples[0]["replicas"].get(name, 0)
        most = max(s["replicas"].get(name, 0) for s in samples)
        up = first(samples, name, lambda n, rest=rest: n > rest)
        down = first(samples, name, lambda n, rest=rest: n <= rest, after=load_end)
        lines.append(f"| {name} | {rest} | {most} | {up} | {down} |")
    print("\n".join(lines))
    if not args.no_write:
        (DOCS / "autoscaling.json").write_text(json.dumps({"load_end": load_end, "samples": samples}, indent=1))
        plot(samples, load_end, DOCS / "autoscaling.png")


if __name__ == "__main__":
    main()
