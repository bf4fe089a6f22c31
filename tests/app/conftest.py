"""The in-process app over the real PostgreSQL, BlobStore (local and S3), models and speech.

The models load once for the whole tier (``models``: tiny.en and base on first use, the
diarizer too) and every backend here shares them; a backend itself is cheap (``backend_for``),
so each test gets its own with its own blob store and database.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from serve_app.api import create_app
from serve_app.core.settings import Settings
from serve_app.jobs.blobs import BlobStore
from serve_app.jobs.service import JobService
from serve_app.jobs.store import JobStore
from serve_app.jobs.webhooks import WebhookSender
from serve_app.transcription.backends import LocalBackend, LocalModels
from serve_app.transcription.service import TranscriptionService

SECRET = "jobs-flow-test-secret"
LOOPBACK = "127.0.0.1"


@pytest.fixture(scope="session")
def models(settings, catalog) -> LocalModels:
    """The served models and the diarizer, loaded in this process once for the tier."""
    return LocalModels(settings, catalog)


@pytest.fixture(scope="session")
def backend_for(catalog, models):
    """A LocalBackend over the tier's models, for ``settings`` and ``blobs``."""

    def make(settings: Settings | None = None, blobs: BlobStore | None = None) -> LocalBackend:
        return LocalBackend(settings or Settings(), catalog, blobs, models=models)

    return make


@pytest.fixture
def local_backend(backend_for):
    return backend_for()


def app_of(settings: Settings, catalog, backend, jobs: JobService | None = None):
    """The FastAPI app of a TranscriptionService, and the service."""
    service = TranscriptionService(settings, catalog, backend, jobs)
    return create_app(service), service


@pytest.fixture(scope="session")
def tokenizer(catalog):
    """tiny.en's real Whisper tokenizer (no model loaded)."""
    from pathlib import Path

    import tokenizers
    from faster_whisper.tokenizer import Tokenizer

    path = Path(catalog.resolve("tiny.en")) / "tokenizer.json"
    return Tokenizer(tokenizers.Tokenizer.from_file(str(path)), False, task="transcribe", language="en")


@pytest.fixture
async def service(job_dsn, blob_settings, catalog, backend_for):
    # The tests' webhook receivers listen on loopback: allowed here, as an internal receiver.
    settings = Settings(database_url=job_dsn, webhook_secret=SECRET, webhook_allow_hosts=[LOOPBACK], **blob_settings)
    store = JobStore(job_dsn)
    blobs = BlobStore.from_settings(settings)
    app, svc = app_of(settings, catalog, backend_for(settings, blobs), JobService(store, blobs, max_attempts=2))
    worker = svc.job_worker(
        lease_seconds=10,
        poll_seconds=0.5,
        webhooks=WebhookSender(SECRET, max_attempts=3, backoff_seconds=0.1, allow=[LOOPBACK]),
    )
    loop_task = asyncio.create_task(worker.run())
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost", timeout=120)
    yield client, store, blobs, worker, svc
    loop_task.cancel()
    await worker.close()
    await client.aclose()
    await store.close()
