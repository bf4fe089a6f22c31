"""Full queues answer 503 with Retry-After instead of timing out.

The real Ray Serve queue limit (max_queued_requests) is exercised on a small probe deployment
in the test cluster, standing in for a saturated Transcriber so the shared app is not
disturbed; the RayBackend and the HTTP app in front of it are the service's own.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from ray import serve

from deployments.ingress import RayBackend
from serve_app.api import create_app
from serve_app.core.errors import Overloaded
from serve_app.core.settings import Settings
from serve_app.transcription.service import TranscriptionService
from testkit.speech import audio


@serve.deployment(max_ongoing_requests=1, max_queued_requests=1, ray_actor_options={"num_cpus": 0})
class SlowStage:
    """Stands in for the Preprocessor, whose streaming ``transcribe`` the RayBackend calls."""

    async def transcribe(self, source, target, options, prepare, speakers=None):
        from serve_app.transcription.pipeline import Finished

        await asyncio.sleep(2)
        yield Finished(0.0, "tiny.en", "en", None)  # an empty recording: the test looks at the refusals


@pytest.fixture(scope="module")
def probe(service):
    handle = serve.run(SlowStage.bind(), name="backpressure-probe", route_prefix=None)
    yield handle
    serve.delete("backpressure-probe")


async def test_full_queue_is_503_with_retry_after(probe, catalog):
    backend = RayBackend(probe, {"tiny.en": probe})
    settings = Settings()
    app = create_app(TranscriptionService(settings, catalog, backend))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost", timeout=60) as client:
        responses = await asyncio.gather(
            *(
                client.post("/api/v1/transcriptions", files={"file": ("a.wav", audio("harvard_01.wav"))})
                for _ in range(6)
            )
        )
    overloaded = [r for r in responses if r.status_code == 503]
    assert overloaded, [r.status_code for r in responses]
    assert overloaded[0].json()["error"]["code"] == "overloaded"
    assert int(overloaded[0].headers["retry-after"]) > 0


async def test_backend_raises_overloaded(probe):
    backend = RayBackend(probe, {"tiny.en": probe})

    async def drain():
        async for _ in backend.transcribe(b"x", "tiny.en", None, None):
            pass

    results = await asyncio.gather(*(drain() for _ in range(6)), return_exceptions=True)
    assert any(isinstance(r, Overloaded) for r in results), results
