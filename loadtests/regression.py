"""The seed's regression check: p50/p95/p99 of health and uploads against a running service.

    python -m loadtests.regression --url http://127.0.0.1:8000 [--requests 40] [--concurrency 8]

Runs health checks while uploads keep the Transcribers busy, so the health numbers show
whether the event loop stays free under load. Prints a table; exits 0 (it reports, it does
not judge: compare against docs/PERFORMANCE.md from the same machine).
"""

from __future__ import annotations

import argparse
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))] * 1000 if xs else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    files = [(p.name, p.read_bytes()) for p in sorted(DATA.glob("harvard_0*.wav"))]
    uploads, health, stop = [], [], threading.Event()

    def upload(i: int) -> None:
        name, data = files[i % len(files)]
        with httpx.Client(base_url=args.url, timeout=600) as c:
            t0 = time.perf_counter()
            c.post("/api/v1/transcriptions", files={"file": (name, data)}).raise_for_status()
            uploads.append(time.perf_counter() - t0)

    def probe() -> None:
        with httpx.Client(base_url=args.url, timeout=30) as c:
            while not stop.is_set():
                t0 = time.perf_counter()
                c.get("/api/v1/health").raise_for_status()
                health.append(time.perf_counter() - t0)
                time.sleep(0.1)

    prober = threading.Thread(target=probe)
    prober.start()
    with ThreadPoolExecutor(args.concurrency) as pool:
        list(pool.map(upload, range(args.requests)))
    stop.set()
    prober.join()
    print(f"{'endpoint':<24}{'n':>6}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}")
    for name, xs in (("GET /api/v1/health", health), ("POST upload (sync)", uploads)):
        print(f"{name:<24}{len(xs):>6}{pct(xs, 0.5):>10.1f}{pct(xs, 0.95):>10.1f}{pct(xs, 0.99):>10.1f}")


if __name__ == "__main__":
    main()
