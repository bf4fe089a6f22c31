"""Many short files at once: one batch, async jobs, and concurrent sync requests, same run.

    python -m loadtests.batches [--rounds 3] [--files 100] [--jobs 50]

Starts its own service (cpu profile, local Ray, temporary data). Each round, on the bench
corpus's short files (cycled to ``--files``):
- (s) the files as sync requests, 16 at a time: the baseline;
- (b) the files as one batch (POST /api/v1/batches), until the batch has ended;
- (s50) the first ``--jobs`` files as sync requests, 16 at a time, and
- (a) the same files submitted as async jobs all at once, until every job has ended;
then WER of every file's transcript. The batch and the async jobs are timed until the server
marks them done (the batch's ended_at, the last job's completed_at), not until the next poll.
Prints throughput (audio seconds per wall second) and the
ratios b/s and a/s50 per round and their medians; writes docs/batches.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx  # noqa: E402

from loadtests import corpus as corpus_mod  # noqa: E402
from loadtests.bench import start_service  # noqa: E402
from testkit.speech import corpus_wer  # noqa: E402

DOCS = Path(__file__).resolve().parents[1] / "docs"
FORM = {"model": "tiny.en", "language": "en"}


def short_files(count: int) -> list[tuple[str, bytes, str, float]]:
    items = [(p, m) for p, m in corpus_mod.build().items() if m["seconds"] <= 15]
    items.sort()
    return [
        (f"{i:03d}-{Path(p).name}", Path(p).read_bytes(), m["text"], m["seconds"])
        for i, (p, m) in enumerate(items[n % len(items)] for n in range(count))
    ]


def sync_pass(client: httpx.Client, files, concurrency: int = 16) -> tuple[float, float]:
    def one(f):
        r = client.post("/api/v1/transcriptions", files={"file": (f[0], f[1])}, data=FORM)
        r.raise_for_status()
        return f[2], r.json()["text"]

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        pairs = list(pool.map(one, files))
    return time.perf_counter() - started, corpus_wer(pairs)


def batch_pass(client: httpx.Client, files) -> tuple[float, float]:
    started = datetime.now(timezone.utc)
    r = client.post("/api/v1/batches", files=[("files", (f[0], f[1])) for f in files], data=FORM)
    r.raise_for_status()
    batch_id = r.json()["id"]
    while True:
        body = client.get(f"/api/v1/batches/{batch_id}").json()
        if body["status"] not in ("PENDING", "PROCESSING"):
            break
        time.sleep(0.5)  # (a client of a batch would rather wait for its one webhook)
    # Until the batch ended (its last job done, the moment its webhook goes out), not until
    # this loop next looked: the sync passes end with their last response. Same machine, same clock.
    wall = (datetime.fromisoformat(body["ended_at"]) - started).total_seconds()
    assert body["status"] == "COMPLETED", body["aggregate"]
    texts = {f["filename"]: f["text_preview"] or "" for f in body["files"]}
    client.delete(f"/api/v1/batches/{batch_id}")
    return wall, corpus_wer([(f[2], texts[f[0]]) for f in files])


def async_pass(client: httpx.Client, files) -> tuple[float, float]:
    def submit(f):
        r = client.post("/api/v1/transcriptions", files={"file": (f[0], f[1])}, data=FORM | {"sync": "false"})
        r.raise_for_status()
        return r.json()["id"]

    started = datetime.now(timezone.utc)
    with ThreadPoolExecutor(len(files)) as pool:
        ids = list(pool.map(submit, files))
    wanted = set(ids)
    while True:  # one listing per look (the newest jobs are these), as a client watching a queue would
        page = client.get("/api/v1/transcriptions", params={"limit": 100}).json()["items"]
        ended = {j["id"]: j for j in page if j["id"] in wanted and j["status"] in ("COMPLETED", "FAILED")}
        if len(ended) == len(wanted):
            break
        time.sleep(0.5)
    assert all(j["status"] == "COMPLETED" for j in ended.values())
    wall = (max(datetime.fromisoformat(j["completed_at"]) for j in ended.values()) - started).total_seconds()
    texts = {i: client.get(f"/api/v1/transcriptions/{i}").json()["result"]["text"] for i in ids}
    return wall, corpus_wer([(f[2], texts[i]) for f, i in zip(files, ids)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=50)
    args = parser.parse_args()
    files = short_files(args.files)
    audio_s = sum(f[3] for f in files)
    some = files[: args.jobs]
    some_s = sum(f[3] for f in some)
    with tempfile.TemporaryDirectory() as data_dir:
        url, stop = start_service(data_dir)
        rounds = []
        try:
            with httpx.Client(base_url=url, timeout=900, limits=httpx.Limits(max_connections=64)) as client:
                sync_pass(client, files[:16])  # warm
                for n in range(args.rounds):
                    s, s_wer = sync_pass(client, files)
                    b, b_wer = batch_pass(client, files)
                    s50, _ = sync_pass(client, some)
                    a, a_wer = async_pass(client, some)
                    row = {
                        "sync16_s": round(s, 2),
                        "batch_s": round(b, 2),
                        "sync16_50_s": round(s50, 2),
                        "async50_s": round(a, 2),
                        "batch_vs_sync16": round(s / b, 3),
                        "async50_vs_sync16": round(s50 / a, 3),
                        "wer": {"sync": round(s_wer, 2), "batch": round(b_wer, 2), "async": round(a_wer, 2)},
                    }
                    rounds.append(row)
                    print(f"round {n + 1}: {json.dumps(row)}", flush=True)
        finally:
            stop()
    summary = {
        "files": args.files,
        "audio_seconds": round(audio_s, 1),
        "jobs": args.jobs,
        "jobs_audio_seconds": round(some_s, 1),
        "rounds": rounds,
        "median_batch_vs_sync16": statistics.median(r["batch_vs_sync16"] for r in rounds),
        "median_async50_vs_sync16": statistics.median(r["async50_vs_sync16"] for r in rounds),
        "median_x_real_time": {
            "sync16": round(audio_s / statistics.median(r["sync16_s"] for r in rounds), 1),
            "batch": round(audio_s / statistics.median(r["batch_s"] for r in rounds), 1),
            "async50": round(some_s / statistics.median(r["async50_s"] for r in rounds), 1),
            "sync16_50": round(some_s / statistics.median(r["sync16_50_s"] for r in rounds), 1),
        },
    }
    (DOCS / "batches.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
