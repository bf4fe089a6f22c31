"""One abusive tenant against another (#28): does the second tenant keep its latency?

    python -m loadtests.abuse --rounds 3 [--seconds 60]

Starts `stt serve` as a person does (embedded PostgreSQL, HAProxy, tiny.en), with keys
required and webhooks on, and makes two tenants. Per round, the victim keeps two sync
transcriptions of 4-5 s clips (the Harvard sentences in tests/data) in flight for --seconds,
first alone, then while the abuser, with the same documented API and its default limits, does
all of this at once:

- **stream flood**: opens event streams on one of its queued jobs until refused, and holds them;
- **batch flood**: submits batches of 100 short clips until refused (its queued-jobs cap);
- **webhook tarpit**: every one of those jobs has a webhook to a receiver on this box that
  answers one byte every few seconds, and never finishes.

Reports the victim's p50/p95 alone and abused, their ratio per round (target: p95 <= 1.5x),
and what the abuser got (streams held, jobs accepted, refusals by code). The abuser's jobs are
deleted between rounds. Writes docs/abuse.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import httpx

from testkit.process import ServiceProcess
from testkit.speech import audio

DOCS = Path(__file__).resolve().parents[1] / "docs"
CLIPS = [f"harvard_0{n}.wav" for n in range(1, 9)]  # 4.0-5.0 s each
ADMIN_KEY = "stt-abuse-bench-admin-key"
WEBHOOK_SECRET = "stt-abuse-bench-webhook-secret"
MAX_STREAMS = 200  # what the probe of #28 opened


class Tarpit:
    """A webhook receiver that reads the request, then answers a byte every ``every`` seconds."""

    def __init__(self, every: float = 3.0):
        self.every, self.open, self.stop = every, 0, threading.Event()
        self.server = socket.create_server(("127.0.0.1", 0), backlog=512)
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}/hook"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn):
        self.open += 1
        with conn:
            try:
                conn.recv(65536)
                for byte in b"HTTP/1.1 200 OK\r\n" * 100:
                    conn.send(bytes([byte]))
                    if self.stop.wait(self.every):
                        return
            except OSError:
                pass
            finally:
                self.open -= 1

    def close(self):
        self.stop.set()
        self.server.close()


def say(what: str) -> None:
    """Progress on stderr, with the wall-clock time (to line up with a CPU profile of the box)."""
    print(f"{time.time():.1f} {what}", file=sys.stderr, flush=True)


def victim_elsewhere(pool: ProcessPoolExecutor, url: str, key: str, seconds: float) -> asyncio.Future:
    """The victim in a process of its own: another tenant is another client, and in the abuser's
    event loop its requests would wait on the abuser's work (building 100-file uploads)."""
    return asyncio.get_running_loop().run_in_executor(pool, _victim_process, url, key, seconds)


def _victim_process(url: str, key: str, seconds: float) -> dict:
    return asyncio.run(victim(url, key, seconds))


async def victim(url: str, key: str, seconds: float, concurrency: int = 2) -> dict:
    latencies, errors, series = [], Counter(), []
    begun = time.monotonic()
    deadline = begun + seconds
    headers = {"Authorization": f"Bearer {key}"}

    async def one(n: int) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=300, headers=headers) as client:
            i = n
            while time.monotonic() < deadline:
                name = CLIPS[i % len(CLIPS)]
                started = time.perf_counter()
                try:
                    r = await client.post("/api/v1/transcriptions", files={"file": (name, audio(name))})
                    if r.status_code == 200:
                        latencies.append(time.perf_counter() - started)
                        series.append((round(time.monotonic() - begun - latencies[-1], 1), round(latencies[-1] * 1000)))
                    else:
                        errors[str(r.status_code)] += 1
                except httpx.HTTPError as exc:
                    errors[type(exc).__name__] += 1
                i += concurrency

    await asyncio.gather(*(one(n) for n in range(concurrency)))
    return {
        "requests": len(latencies),
        "errors": dict(errors),
        "p50_ms": round(statistics.median(latencies) * 1000),
        "p95_ms": round(statistics.quantiles(latencies, n=20)[18] * 1000),
        # when the slowest requests were sent (s into the phase) and what they took: a tail that
        # clusters in time is a stall of the service, one spread over the phase is contention
        "slowest": sorted(series, key=lambda sent_ms: -sent_ms[1])[:8],
    }


async def abuse(url: str, key: str, tarpit: Tarpit, running: asyncio.Event, report: dict) -> None:
    """The three floods at once, until ``running`` is cleared; what it got goes in ``report``."""
    headers = {"Authorization": f"Bearer {key}"}
    refused: Counter[str] = Counter()
    async with httpx.AsyncClient(base_url=url, timeout=120, headers=headers) as client:
        clip = audio("harvard_08.wav")
        first = await client.post(
            "/api/v1/transcriptions", files={"file": ("a.wav", clip)}, data={"sync": "false", "webhook_url": tarpit.url}
        )
        job = first.json()["id"]
        made = [f"/api/v1/transcriptions/{job}"]  # what the abuser deletes after the round
        report["made"] = made

        async def streams() -> int:
            held, opened = [], 0
            async with httpx.AsyncClient(base_url=url, timeout=None, headers=headers) as long:
                for _ in range(MAX_STREAMS):
                    request = long.build_request("GET", f"/api/v1/transcriptions/{job}/events")
                    response = await long.send(request, stream=True)
                    if response.status_code != 200:
                        await response.aread()
                        refused[response.json()["error"]["code"]] += 1
                        await response.aclose()
                        continue
                    held.append(response)
                    opened += 1
                report["streams_held"] = opened
                while running.is_set():
                    await asyncio.sleep(0.5)
                for response in held:
                    await response.aclose()
            return opened

        async def batches() -> None:
            accepted = 0
            while running.is_set():
                files = [("files", (f"b{n}.wav", clip)) for n in range(100)]
                r = await client.post("/api/v1/batches", files=files, data={"webhook_url": tarpit.url})
                if r.status_code == 202:
                    accepted += len(r.json()["files"])
                    report["jobs_accepted"] = accepted
                    made.append(f"/api/v1/batches/{r.json()['id']}")
                else:
                    refused[r.json()["error"]["code"]] += 1
                    await asyncio.sleep(2)

        await asyncio.gather(streams(), batches())
    report["refused"] = dict(refused)


async def clean(url: str, key: str, made: list[str]) -> None:
    """The abuser deletes what it made (batches with their jobs, audio, results and queue
    places) between rounds, waiting out its own rate limit."""
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url, timeout=300, headers=headers) as client:
        for path in made:
            while (r := await client.delete(path)).status_code == 429:
                await asyncio.sleep(float(r.headers.get("retry-after", "1")))


def wait_quiet(busy_below: float = 0.25, for_s: int = 3, deadline_s: float = 600) -> None:
    """Until the box's CPUs are nearly idle for ``for_s`` seconds in a row: the work of the
    round before (the abuser's deleted jobs still decoding) must not count against the victim
    alone. A condition with a generous deadline, not a fixed wait."""

    def ticks() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]  # all, idle + iowait

    deadline, quiet = time.monotonic() + deadline_s, 0
    before = ticks()
    while quiet < for_s:
        if time.monotonic() > deadline:
            say(f"the box did not quieten within {deadline_s} s; measuring anyway")
            return
        time.sleep(1)
        now = ticks()
        total, idle = now[0] - before[0], now[1] - before[1]
        quiet = quiet + 1 if total and 1 - idle / total < busy_below else 0
        before = now


async def round_(url: str, keys: dict, seconds: float, tarpit: Tarpit, pool: ProcessPoolExecutor) -> dict:
    await asyncio.to_thread(wait_quiet)
    say("the victim alone")
    alone = await victim_elsewhere(pool, url, keys["victim"], seconds)
    say("the abuser starts")
    running, got = asyncio.Event(), {}
    running.set()
    flood = asyncio.create_task(abuse(url, keys["abuser"], tarpit, running, got))
    await asyncio.sleep(10)  # the floods under way before the victim measures
    say("the victim while abused")
    abused = await victim_elsewhere(pool, url, keys["victim"], seconds)
    say("the abuser stops")
    running.clear()
    await flood
    return {
        "alone": alone,
        "abused": abused,
        "p95_ratio": round(abused["p95_ms"] / alone["p95_ms"], 2),
        "p50_ratio": round(abused["p50_ms"] / alone["p50_ms"], 2),
        "abuser": got,
        "tarpit_connections_at_end": tarpit.open,
    }


async def make_keys(url: str) -> dict:
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    keys = {}
    async with httpx.AsyncClient(base_url=url, timeout=60, headers=admin) as client:
        for tenant in ("victim", "abuser"):
            made = await client.post("/api/v1/admin/keys", json={"tenant": tenant, "name": "abuse bench"})
            keys[tenant] = made.json()["key"]
        # The victim's own request rate is not what is measured; the abuser keeps every default.
        await client.put("/api/v1/admin/tenants/victim/limits", json={"requests_per_minute": 0})
    return keys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    report: dict = {"rounds": []}
    env = {"STT_API_KEY": ADMIN_KEY, "STT_WEBHOOK_SECRET": WEBHOOK_SECRET, "STT_WEBHOOK_ALLOW_HOSTS": "127.0.0.1"}
    tarpit = Tarpit()
    with tempfile.TemporaryDirectory(prefix="stt-abuse-") as folder:
        service = ServiceProcess(Path(folder), None, env=env)
        service.start()
        try:
            service.wait_ready()
            keys = asyncio.run(make_keys(service.url))
            asyncio.run(victim(service.url, keys["victim"], 10))  # pools and caches warm
            for _ in range(args.rounds):
                with ProcessPoolExecutor(1) as pool:
                    done = asyncio.run(round_(service.url, keys, args.seconds, tarpit, pool))
                asyncio.run(clean(service.url, keys["abuser"], done["abuser"].pop("made")))
                report["rounds"].append(done)
                print(json.dumps(done), flush=True)
        finally:
            tarpit.close()
            service.stop()
            service.kill_leftovers()
    report["median_p95_ratio"] = statistics.median(r["p95_ratio"] for r in report["rounds"])
    report["median_p50_ratio"] = statistics.median(r["p50_ratio"] for r in report["rounds"])
    print(json.dumps({k: v for k, v in report.items() if k != "rounds"}, indent=1))
    (DOCS / "abuse.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
