"""Durable jobs on the real Ray Serve app: many at once, a killed worker, a restarted database."""

from __future__ import annotations

import asyncio
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import asyncpg

from testkit.speech import audio, corpus_wer, transcripts, wer

SHORT = sorted(n for n in transcripts() if n.endswith(".wav"))


def submit(service, name: str, **form) -> str:
    with service.client() as client:
        response = client.post(
            "/api/v1/transcriptions", files={"file": (name, audio(name))}, data={"sync": "false", **form}
        )
    assert response.status_code == 202, response.text
    return response.json()["id"]


def wait_all(service, ids: list[str], timeout: float = 600) -> dict[str, dict]:
    done: dict[str, dict] = {}
    deadline = time.monotonic() + timeout
    with service.client() as client:
        while len(done) < len(ids) and time.monotonic() < deadline:
            for job_id in ids:
                if job_id in done:
                    continue
                response = client.get(f"/api/v1/transcriptions/{job_id}")
                if response.status_code == 200 and response.json()["status"] in ("COMPLETED", "FAILED"):
                    done[job_id] = response.json()
            time.sleep(0.5)
    assert len(done) == len(ids), f"{len(ids) - len(done)} jobs unfinished after {timeout} s"
    return done


def rows(service, ids: list[str]) -> list[asyncpg.Record]:
    async def fetch():
        conn = await asyncpg.connect(service.database_url)
        try:
            return await conn.fetch(
                "SELECT id, status, attempts, error FROM transcription_jobs WHERE id = ANY($1::uuid[])",
                [uuid.UUID(i) for i in ids],
            )
        finally:
            await conn.close()

    return asyncio.run(fetch())


def test_fifty_jobs_at_once_all_complete_exactly_once(service):
    names = [SHORT[i % len(SHORT)] for i in range(50)]
    with ThreadPoolExecutor(16) as pool:
        ids = list(pool.map(lambda n: submit(service, n), names))
    results = wait_all(service, ids)
    for job_id, name in zip(ids, names):
        body = results[job_id]
        assert body["status"] == "COMPLETED", body
        # Its own words: another request's text would be ~100% wrong. tiny.en makes up to 4
        # errors in a 15-word sentence depending on what shares its window ("For hours ...
        # face to us" for "Four hours ... faced us": 25%), so the bound per file is loose and
        # the overall one tight.
        assert wer(transcripts()[name], body["result"]["text"]) < 40, (name, body["result"]["text"])
    pairs = [(transcripts()[n], results[i]["result"]["text"]) for i, n in zip(ids, names)]
    assert corpus_wer(pairs) < 15
    recorded = rows(service, ids)
    assert len(recorded) == 50
    assert all(r["status"] == "COMPLETED" and r["attempts"] == 1 for r in recorded)  # none twice


def _kill_job_workers() -> int:
    import ray

    killed = 0
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if "JobWorker" in actor["name"]:
            ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]), no_restart=True)
            killed += 1
    return killed


def test_job_survives_its_worker_being_killed(service):
    job_id = submit(service, "harvard_long.flac")
    deadline = time.monotonic() + 60
    with service.client() as client:
        while client.get(f"/api/v1/transcriptions/{job_id}").json()["status"] != "PROCESSING":
            assert time.monotonic() < deadline
            time.sleep(0.1)
    # Every JobWorker replica (the backlog may have scaled them to two), so the one holding
    # the job is surely among them.
    assert _kill_job_workers() >= 1
    body = wait_all(service, [job_id], timeout=300)[job_id]
    assert body["status"] == "COMPLETED", body
    # The dead worker's lease expired and a new worker reclaimed it. On a slow box the backlog
    # autoscaler may also stop the replica that reclaimed it (scaling down after the fifty-job
    # burst), which costs more attempts: at least one reclaim, within the job's attempts (5 here).
    # A replica shut down gracefully should hand its jobs back instead (not done yet).
    assert 2 <= body["attempts"] <= 5
    assert wer(transcripts()["harvard_long.flac"], body["result"]["text"]) < 15


def test_postgres_restart_gives_503_then_recovers_without_losing_jobs(service):
    ids = [submit(service, name) for name in SHORT[:6]]
    postgres = service.postgres
    postgres.stop()
    try:
        with service.client() as client:
            down = client.post("/api/v1/transcriptions", files={"file": ("a.wav", audio(SHORT[0]))})
            assert down.status_code == 503, down.text
            assert down.json()["error"]["code"] == "database_unavailable"
            assert down.headers["retry-after"]
            assert client.get(f"/api/v1/transcriptions/{ids[0]}").status_code == 503
            refused = client.post(
                "/api/v1/transcriptions", files={"file": ("b.wav", audio(SHORT[1]))}, data={"sync": "false"}
            )
            assert refused.status_code == 503  # not accepted, so nothing to lose
            health = client.get("/api/v1/health")
            assert health.status_code == 200 and health.json()["database"] == "unavailable"
        time.sleep(3)
    finally:
        with postgres._lock:
            postgres.ensure_postgres_running()
    results = wait_all(service, ids, timeout=300)
    assert all(r["status"] == "COMPLETED" for r in results.values()), results
    with service.client() as client:
        deadline = time.monotonic() + 30
        while (
            up := client.post("/api/v1/transcriptions", files={"file": ("a.wav", audio(SHORT[0]))})
        ).status_code == 503:
            assert time.monotonic() < deadline, up.text
            time.sleep(0.5)
        assert up.status_code == 200
        assert client.get("/api/v1/health").json()["database"] == "ok"
