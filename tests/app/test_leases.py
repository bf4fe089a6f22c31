"""Running jobs keep their leases and never linger: a sync transcription that runs longer than
its lease is not failed by the reaper while it runs (its lease is renewed), and a result that
cannot be stored ends the job at once (sync: FAILED; async: queued again) instead of leaving it
PROCESSING until its lease runs out.

The blob store that cannot be written is a real one: a file stands where its results folder
would go."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest

from serve_app.core.settings import Settings
from serve_app.jobs.blobs import BlobStore
from serve_app.jobs.service import JobService
from serve_app.jobs.store import JobStore
from testkit.recordings import long_recording
from testkit.speech import audio, wer
from tests.app.conftest import app_of

LEASE = 1.0  # seconds


@pytest.fixture
async def short_leases(job_dsn, catalog, backend_for, tmp_path):
    """The app with 1 s leases and a JobWorker whose loop runs the lease reaper every second."""

    async def make(broken_results: bool = False):
        root = tmp_path / "blobs"
        root.mkdir()
        if broken_results:
            (root / "results").write_text("a file where the results folder would go")
        settings = Settings(database_url=job_dsn, blob_url=f"file://{root}", lease_seconds=LEASE)
        store, blobs = JobStore(job_dsn), BlobStore.from_settings(settings)
        app, service = app_of(settings, catalog, backend_for(settings, blobs), JobService(store, blobs, max_attempts=2))
        worker = service.job_worker(lease_seconds=LEASE, poll_seconds=0.2)
        made.append((worker, asyncio.create_task(worker.run()), store))
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost", timeout=300)
        return client, store, blobs

    made = []
    yield make
    for worker, task, store in made:
        task.cancel()
        await worker.close()
        await store.close()


async def test_a_sync_transcription_longer_than_its_lease_completes(short_leases):
    client, store, blobs = await short_leases()
    recording, text, seconds = long_recording(150)
    started = time.monotonic()
    response = await client.post("/api/v1/transcriptions", files={"file": ("talk.mp3", recording)})
    took = time.monotonic() - started
    assert response.status_code == 200, response.text
    assert took > 3 * LEASE, f"took {took:.1f} s: not longer than its lease, so this shows nothing"
    body = response.json()
    assert wer(text, body["text"]) < 20
    row = await store.get(uuid.UUID(body["id"]))
    assert row.status == "COMPLETED" and row.error is None, (row.status, row.error)
    assert await blobs.exists(row.result_key)


async def test_a_result_that_cannot_be_stored_fails_the_sync_job_at_once(short_leases):
    client, store, blobs = await short_leases(broken_results=True)
    response = await client.post("/api/v1/transcriptions", files={"file": ("a.wav", audio("harvard_01.wav"))})
    assert response.status_code == 503 and response.json()["error"]["code"] == "storage_unavailable"
    [row] = (await store.list("default"))[0]
    assert row.status == "FAILED" and "blob store" in row.error, (row.status, row.error)
    assert row.lease_owner is None


async def test_a_result_that_cannot_be_stored_sends_the_async_job_back_at_once(short_leases):
    client, store, blobs = await short_leases(broken_results=True)
    response = await client.post(
        "/api/v1/transcriptions", files={"file": ("a.wav", audio("harvard_01.wav"))}, data={"sync": "false"}
    )
    assert response.status_code == 202, response.text
    job_id = uuid.UUID(response.json()["id"])
    deadline = time.monotonic() + 120
    while (row := await store.get(job_id)).status != "FAILED":
        assert time.monotonic() < deadline, (row.status, row.attempts, row.error)
        await asyncio.sleep(0.1)
    # Both attempts ran and failed on the store, each ended at once: not by the lease reaper.
    assert row.attempts == 2 and row.error.startswith("Storing the result failed"), row.error
    assert await blobs.exists(row.audio_key)  # the upload is kept for a retry by hand
