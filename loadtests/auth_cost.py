"""What API keys and rate limiting cost the cheap calls: Locust p95 of health and job status
under the seed's load mix, keys off vs keys on, on one service in one run.

    python loadtests/auth_cost.py --rounds 3 [--users 8] [--seconds 60]

Keys off is the open mode (no key exists); then a key is made (with a rate limit far above
this load, so each request still pays the limiter's upsert) and the same load runs with it.
The open mode never comes back once a key exists (on purpose), so the off rounds run first.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from loadtests.bench import start_service  # noqa: E402

NAMES = ("health", "job status", "list jobs", "upload short (sync)")


def locust(url: str, users: int, seconds: int, key: str | None, out: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("STT_LOCUST_KEY", None)
    if key:
        env["STT_LOCUST_KEY"] = key
    prefix = out / ("on" if key else "off")
    cmd = [sys.executable, "-m", "locust", "-f", str(ROOT / "loadtests" / "locustfile.py"), "--headless"]
    cmd += ["-u", str(users), "-r", str(users), "-t", f"{seconds}s", "--host", url, "--csv", str(prefix)]
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=seconds + 120)
    with open(f"{prefix}_stats.csv") as f:
        rows = {r["Name"]: r for r in csv.DictReader(f)}
    p95 = {n: float(rows[n]["95%"]) for n in NAMES if n in rows and rows[n]["95%"] not in ("", "N/A")}
    p95["failures"] = sum(int(r["Failure Count"]) for n, r in rows.items() if n != "Aggregated")
    return p95


async def make_key(database_url: str) -> str:
    from serve_app.jobs.store import JobStore
    from serve_app.tenancy.keys import KeyStore
    from serve_app.tenancy.limits import Limits

    store = JobStore(database_url, min_size=0, max_size=1)
    try:
        keys = KeyStore(store)
        _, key = await keys.create("loadtest", name="auth_cost")
        await keys.set_limits("loadtest", Limits(requests_per_minute=100_000))
        return key
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=60)
    args = parser.parse_args()
    data_dir = tempfile.mkdtemp(prefix="stt-authcost-")
    url, stop = start_service(data_dir)
    try:
        import httpx

        database_url = None
        with httpx.Client(base_url=url, timeout=300) as client:  # warm: the first request loads models
            for name in ("harvard_01.wav", "harvard_02.wav"):
                client.post("/api/v1/transcriptions", files={"file": (name, (ROOT / "tests/data" / name).read_bytes())})
        from serve_app.core.settings import Settings
        from serve_app.jobs.database import database_url as db_url

        database_url = db_url(Settings(data_dir=Path(data_dir)))
        out = Path(tempfile.mkdtemp(prefix="stt-authcost-csv-"))
        off = [locust(url, args.users, args.seconds, None, out) for _ in range(args.rounds)]
        key = asyncio.run(make_key(database_url))
        on = [locust(url, args.users, args.seconds, key, out) for _ in range(args.rounds)]
    finally:
        stop()
    print(
        f"Locust, {args.users} users, {args.seconds} s a round, {args.rounds} rounds each; p95 in ms (median of rounds)"
    )
    print(f"{'call':<22} {'keys off':>9} {'keys on':>9} {'on - off':>9}")
    for name in NAMES:
        a = statistics.median(r.get(name, float("nan")) for r in off)
        b = statistics.median(r.get(name, float("nan")) for r in on)
        print(f"{name:<22} {a:>9.0f} {b:>9.0f} {b - a:>+9.0f}")
    print("rounds off:", off)
    print("rounds on: ", on)


if __name__ == "__main__":
    main()
