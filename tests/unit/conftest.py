"""The in-process service over the real PostgreSQL and BlobStore (local and S3), shared by the
unit tests of jobs, streaming and batches."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from serve_app.api import create_app
from serve_app.backend import LocalBackend
from serve_app.blobs import BlobStore
from serve_app.jobs import JobService
from serve_app.jobstore import JobStore
from serve_app.service import TranscriptionService
from serve_app.settings import Settings
from serve_app.webhooks import WebhookSender
from serve_app.worker import JobWorker

SECRET = "jobs-flow-test-secret"
LOOPBACK = "127.0.0.1"


@pytest.fixture(scope="module")
def local_backend(catalog):
    return LocalBackend(Settings(), catalog)


@pytest.fixture
def job_dsn():
    """A database of the test's own: a JobWorker of one test can never claim another's jobs
    (the session's shared database let a worker that outlived its test take later tests' jobs)."""
    from tests.conftest import _fresh_database

    yield from _fresh_database()


@pytest.fixture
async def service(job_dsn, blob_settings, catalog, local_backend):
    # The tests' webhook receivers listen on loopback: allowed here, as an internal receiver.
    settings = Settings(database_url=job_dsn, webhook_secret=SECRET, webhook_allow_hosts=[LOOPBACK], **blob_settings)
    store = JobStore(job_dsn)
    await store.migrate()
    blobs = BlobStore.from_settings(settings)
    service = TranscriptionService(settings, catalog, local_backend, JobService(store, blobs, max_attempts=2))
    app = create_app(service)
    worker = JobWorker(
        service,
        lease_seconds=10,
        poll_seconds=0.5,
        webhooks=WebhookSender(SECRET, max_attempts=3, backoff_seconds=0.1, allow=[LOOPBACK]),
    )
    loop_task = asyncio.create_task(worker.run())
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://stt", timeout=120)
    yield client, store, blobs, worker, service
    loop_task.cancel()
    await worker.close()
    await client.aclose()
    await store.close()
