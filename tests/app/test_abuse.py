"""A hostile tenant against the in-process app (real PostgreSQL, blobs on disk, the real
tiny.en model): quotas hold at submission, stored bytes are audio and served as audio, an
open service answers loopback names only, and tenants take turns in the queue."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

import httpx
import numpy as np
import pytest
import uvicorn

from serve_app.api import create_app
from serve_app.core.settings import Settings
from serve_app.jobs.blobs import BlobStore
from serve_app.jobs.service import JobService
from serve_app.jobs.store import JobStore
from serve_app.tenancy.keys import KeyStore
from serve_app.tenancy.limits import Limits
from serve_app.transcription.service import TranscriptionService
from testkit.speech import audio
from testkit.synthesis import wav_bytes

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
TTL = 0.5
COUNT_BY_STATUS = "SELECT status, count(*) FROM transcription_jobs WHERE user_id = $1 GROUP BY status"


@pytest.fixture(scope="module")
def blob_root(tmp_path_factory):
    return tmp_path_factory.mktemp("abuse-blobs")


@pytest.fixture
async def app(keyed_dsn, blob_root, catalog, backend_for):
    settings = Settings(database_url=keyed_dsn, blob_url=f"file://{blob_root}", auth_cache_seconds=TTL)
    store = JobStore(settings.database_url)
    blobs = BlobStore.from_settings(settings)
    service = TranscriptionService(settings, catalog, backend_for(settings, blobs), JobService(store, blobs))
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(service)), base_url="http://localhost", timeout=120
    )
    yield client, store, service
    await client.aclose()
    await store.close()


async def tenant(store, name: str, **limits) -> dict:
    """A key of a new tenant with these limits (and no request rate limit)."""
    ks = KeyStore(store)
    _, key = await ks.create(name, name=f"{name} tests")
    await ks.set_limits(name, Limits(**({"requests_per_minute": 0} | limits)))
    return {"Authorization": f"Bearer {key}"}


def stored_files(root) -> list:
    return sorted(p for p in root.rglob("*") if p.is_file())


def submit(client, headers, name="harvard_08.wav", data=b"", **fields):
    body = data or audio("harvard_08.wav")
    return client.post(
        "/api/v1/transcriptions", files={"file": (name, body)}, data={"sync": "false", **fields}, headers=headers
    )


async def test_a_batch_over_the_daily_quota_is_refused_whole_at_submission(app, blob_root):
    client, store, _ = app
    small = await tenant(store, f"quota-{uuid.uuid4().hex[:6]}", audio_hours_per_day=30 / 3600)  # 30 s a day
    before = stored_files(blob_root)
    files = [("files", (f"h{n}.wav", audio("harvard_08.wav"))) for n in range(20)]  # ~20 x 2.5 s
    refused = await client.post("/api/v1/batches", files=files, data={"model": "tiny.en"}, headers=small)
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "quota_exceeded" and "Retry-After" in refused.headers
    assert stored_files(blob_root) == before  # nothing of the refused batch is kept
    listed = (await client.get("/api/v1/transcriptions", headers=small)).json()
    assert listed["items"] == []
    # Within the quota: accepted, and what it reserves counts against the next submission.
    accepted = await client.post("/api/v1/batches", files=files[:6], data={"model": "tiny.en"}, headers=small)
    assert accepted.status_code == 202, accepted.text
    over = await submit(client, small, name="long.flac", data=audio("harvard_long.flac"), model="tiny.en")
    assert over.status_code == 429 and over.json()["error"]["code"] == "quota_exceeded"


async def test_queued_jobs_and_stored_bytes_are_capped_per_tenant(app):
    client, store, _ = app
    queued = await tenant(store, f"queue-{uuid.uuid4().hex[:6]}", max_queued=3)
    files = [("files", (f"h{n}.wav", audio("harvard_08.wav"))) for n in range(4)]
    over = await client.post("/api/v1/batches", files=files, data={"model": "tiny.en"}, headers=queued)
    assert over.status_code == 429 and over.json()["error"]["code"] == "too_many_queued"
    assert (await client.post("/api/v1/batches", files=files[:3], headers=queued)).status_code == 202
    one_more = await submit(client, queued, model="tiny.en")
    assert one_more.status_code == 429 and one_more.json()["error"]["code"] == "too_many_queued"

    size = len(audio("harvard_08.wav"))
    storing = await tenant(store, f"store-{uuid.uuid4().hex[:6]}", storage_gb=2.5 * size / 1e9)
    assert (await submit(client, storing, model="tiny.en")).status_code == 202
    assert (await submit(client, storing, model="tiny.en")).status_code == 202
    third = await submit(client, storing, model="tiny.en")
    assert third.status_code == 429 and third.json()["error"]["code"] == "storage_quota_exceeded"


async def test_bytes_that_are_not_audio_are_never_stored_and_audio_is_served_as_audio(app, blob_root):
    client, store, _ = app
    headers = await tenant(store, f"bytes-{uuid.uuid4().hex[:6]}")
    before = stored_files(blob_root)
    page = b"<html><script>alert(document.cookie)</script></html>" * 50
    refused = await submit(client, headers, name="x.html", data=page, model="tiny.en")
    assert refused.status_code in (400, 415) and refused.json()["error"]["code"] in ("invalid_audio", "no_audio_stream")
    assert refused.headers["x-content-type-options"] == "nosniff"
    assert stored_files(blob_root) == before

    # Real audio named as a page: stored, and served back as the WAV it is.
    job = await submit(client, headers, name="x.html", model="tiny.en")
    assert job.status_code == 202, job.text
    served = await client.get(f"/api/v1/transcriptions/{job.json()['id']}/audio", headers=headers)
    assert served.status_code == 200 and served.content == audio("harvard_08.wav")
    assert served.headers["content-type"] == "audio/wav" and served.headers["x-content-type-options"] == "nosniff"

    # A batch: the file that is not audio is a FAILED job of it, its bytes not kept.
    files = [("files", ("a.wav", audio("harvard_08.wav"))), ("files", ("notes.html", page))]
    batch = await client.post("/api/v1/batches", files=files, data={"model": "tiny.en"}, headers=headers)
    assert batch.status_code == 202, batch.text
    view = (await client.get(f"/api/v1/batches/{batch.json()['id']}", headers=headers)).json()
    by_name = {f["filename"]: f for f in view["files"]}
    assert by_name["notes.html"]["status"] == "FAILED" and "not audio" in by_name["notes.html"]["error"]
    all_bad = await client.post("/api/v1/batches", files=files[1:], headers=headers)
    assert all_bad.status_code in (400, 415)


async def test_a_job_that_fails_keeps_no_audio(app, blob_root):
    """Audio whose start decodes but whose end is cut off passes the check at submission and
    fails in the worker: its upload is deleted then."""
    client, store, service = app
    headers = await tenant(store, f"fails-{uuid.uuid4().hex[:6]}")
    whole = audio("harvard_long.flac")
    job = await submit(client, headers, name="cut.flac", data=whole[: len(whole) // 2], model="tiny.en")
    assert job.status_code == 202, job.text
    job_id = job.json()["id"]
    worker = service.job_worker(lease_seconds=10, poll_seconds=0.2)
    running = asyncio.create_task(worker.run())
    try:
        deadline = time.monotonic() + 300
        while (status := (await client.get(f"/api/v1/transcriptions/{job_id}", headers=headers)).json()["status"]) in (
            "PENDING",
            "PROCESSING",
        ) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
    finally:
        running.cancel()
        await worker.close()
    assert status == "FAILED"
    row = await store.get(uuid.UUID(job_id))
    assert row.audio_key is None
    assert not [p for p in stored_files(blob_root) if job_id in str(p)]
    gone = await client.get(f"/api/v1/transcriptions/{job_id}/audio", headers=headers)
    assert gone.status_code == 404


async def test_an_open_service_answers_loopback_host_names_only(job_dsn, tmp_path, catalog, backend_for):
    settings = Settings(database_url=job_dsn, blob_url=f"file://{tmp_path}")
    store = JobStore(job_dsn)
    blobs = BlobStore.from_settings(settings)
    service = TranscriptionService(settings, catalog, backend_for(settings, blobs), JobService(store, blobs))
    transport = httpx.ASGITransport(app=create_app(service))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            for host in ("localhost:8000", "127.0.0.1:8000", "[::1]:8000", "127.0.0.1", "app.localhost"):
                answer = await client.get("/api/v1/transcriptions", headers={"Host": host})
                assert answer.status_code == 200, (host, answer.text)
            # A page on attacker.example whose name now resolves to 127.0.0.1 sends its own name.
            for host in ("attacker.example", "attacker.example:8000", "127.0.0.1.nip.io", "0x7f000001"):
                answer = await client.get("/api/v1/transcriptions", headers={"Host": host})
                assert answer.status_code == 403 and answer.json()["error"]["code"] == "host_not_allowed", host
    finally:
        await store.close()


def test_an_open_service_refuses_to_bind_beyond_loopback():
    with pytest.raises(ValueError, match="STT_ALLOW_OPEN_NETWORK"):
        Settings(host="0.0.0.0").check_exposure()
    Settings(host="0.0.0.0", api_key="a-bootstrap-key-of-some-length").check_exposure()
    Settings(host="0.0.0.0", auth="required").check_exposure()
    Settings(host="0.0.0.0", allow_open_network=True).check_exposure()
    Settings(host="::1").check_exposure()


async def test_a_small_tenants_job_runs_while_another_tenant_has_200_queued(app):
    client, store, service = app
    big_name = f"big-{uuid.uuid4().hex[:6]}"
    big = await tenant(store, big_name)
    small = await tenant(store, f"small-{uuid.uuid4().hex[:6]}")
    clip = _short_clip()
    for _ in range(2):  # 200 queued, as two batches of 100
        files = [("files", (f"b{n}.wav", clip)) for n in range(100)]
        assert (await client.post("/api/v1/batches", files=files, headers=big)).status_code == 202
    mine = await submit(client, small, name="mine.wav", model="tiny.en")
    assert mine.status_code == 202
    worker = service.job_worker(lease_seconds=10, poll_seconds=0.2, concurrency=2)
    running = asyncio.create_task(worker.run())
    try:
        deadline = time.monotonic() + 300
        while (await client.get(f"/api/v1/transcriptions/{mine.json()['id']}", headers=small)).json()[
            "status"
        ] != "COMPLETED" and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        async with store.connection() as conn:
            counts = dict(await conn.fetch(COUNT_BY_STATUS, big_name))
    finally:
        running.cancel()
        await worker.close()
    # Claimed in turn: the small tenant waited for about one job of the other (two run at once).
    assert counts.get("PENDING", 0) >= 196 and sum(counts.values()) == 200, counts


def _short_clip() -> bytes:
    """A quarter second of quiet noise: real audio, quick to transcribe."""
    return wav_bytes(np.random.default_rng(7).standard_normal(4000) * 300)


@contextlib.asynccontextmanager
async def served(api):
    """The app on a loopback port of its own (uvicorn in this event loop): event streams need a
    real connection (httpx's ASGI transport buffers a whole answer)."""
    server = uvicorn.Server(uvicorn.Config(api, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def first_event(lines) -> str:
    """The next event's name from a stream's lines (one iterator per stream, kept: an iterator
    dropped midway closes its response)."""
    async for line in lines:
        if line.startswith("event: "):
            return line[7:]
    return "(ended)"


async def test_event_streams_are_capped_per_tenant_share_one_watcher_and_end_with_their_key(app):
    client, store, service = app
    api = client._transport.app
    name = f"streams-{uuid.uuid4().hex[:6]}"
    flood = await tenant(store, name)
    other = await tenant(store, f"other-{uuid.uuid4().hex[:6]}")
    job_id = (await submit(client, flood, model="tiny.en")).json()["id"]  # no worker runs: it stays queued
    cap = service.settings.limit_event_streams
    async with (
        served(api) as url,
        httpx.AsyncClient(base_url=url, timeout=60) as http,
        contextlib.AsyncExitStack() as held,
    ):
        streams = []
        for _ in range(cap):
            response = await held.enter_async_context(
                http.stream("GET", f"/api/v1/transcriptions/{job_id}/events", headers=flood)
            )
            assert response.status_code == 200
            lines = response.aiter_lines()
            assert await first_event(lines) == "progress"
            streams.append(lines)
        over = await http.get(f"/api/v1/transcriptions/{job_id}/events", headers=flood, timeout=60)
        assert over.status_code == 429 and over.json()["error"]["code"] == "too_many_streams"
        context = api.state.context
        assert context.streams.open == cap and context.watch.watched == 1  # one watcher for them all
        # Another tenant is served meanwhile.
        done = await http.post(
            "/api/v1/transcriptions", files={"file": ("a.wav", audio("harvard_08.wav"))}, headers=other
        )
        assert done.status_code == 200 and done.json()["text"]
        # The key is revoked: every open stream ends with an error event.
        [key] = [k for k in await KeyStore(store).list(name)]
        await KeyStore(store).revoke(key.id)
        ends = await asyncio.gather(*(asyncio.wait_for(first_event(s), 120) for s in streams))
        assert ends == ["error"] * cap
    deadline = time.monotonic() + 60
    while (context.streams.open or context.watch.watched) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert context.streams.open == 0 and context.watch.watched == 0


async def test_wrong_keys_are_limited_per_client_address(app):
    client, store, _ = app
    good = await tenant(store, f"good-{uuid.uuid4().hex[:6]}")
    wrong = {"Authorization": "Bearer stt_nope_" + "x" * 20}
    codes = []
    for _ in range(40):  # from one address (the ASGI client's), as fast as it can
        answer = await client.get("/api/v1/transcriptions", headers=wrong)
        codes.append(answer.status_code)
        if answer.status_code == 429:
            assert answer.json()["error"]["code"] == "too_many_bad_keys" and "Retry-After" in answer.headers
            break
    assert codes[:10] == [401] * 10 and codes[-1] == 429, codes
    # A right key from the same address is served as ever.
    assert (await client.get("/api/v1/transcriptions", headers=good)).status_code == 200


async def test_the_api_docs_load_nothing_from_elsewhere(app):
    client, *_ = app
    page = await client.get("/docs")
    assert page.status_code == 200 and "/docs/assets/swagger-ui-bundle.js" in page.text
    assert "https://" not in page.text.replace("https://fastapi.tiangolo.com", ""), page.text
    for name, kind in (("swagger-ui-bundle.js", "text/javascript"), ("swagger-ui.css", "text/css")):
        asset = await client.get(f"/docs/assets/{name}")
        assert (
            asset.status_code == 200 and asset.headers["content-type"].startswith(kind) and len(asset.content) > 10_000
        )
    assert (await client.get("/docs/assets/..%2Fmain.py")).status_code == 404
    assert (await client.get("/redoc")).status_code == 404


@pytest.mark.parametrize("samples", [1, 2, 160])
async def test_a_wav_of_a_single_sample_or_a_few_is_a_clear_answer_not_a_500(app, samples):
    client, store, _ = app
    headers = await tenant(store, f"tiny-{uuid.uuid4().hex[:6]}")
    data = wav_bytes(np.full(samples, 1000))
    for path in ("/api/v1/transcriptions", "/v1/audio/transcriptions"):
        answer = await client.post(path, files={"file": ("one.wav", data)}, data={"model": "tiny.en"}, headers=headers)
        assert answer.status_code in (200, 400), (path, answer.status_code, answer.text)
        if answer.status_code == 200:
            assert answer.json()["text"] == ""
    job = await submit(client, headers, name="one.wav", data=data, model="tiny.en")
    assert job.status_code in (202, 400), job.text


async def test_retention_deletes_old_audio_and_optionally_the_jobs(app, blob_root):
    client, store, service = app
    headers = await tenant(store, f"old-{uuid.uuid4().hex[:6]}")
    ids = [(await submit(client, headers, model="tiny.en")).json()["id"] for _ in range(3)]
    async with store.connection() as conn:  # two finished 40 days ago, one yesterday
        for job_id, age in zip(ids, (40, 40, 1)):
            await conn.execute(
                "UPDATE transcription_jobs SET status = 'COMPLETED', completed_at = now() - make_interval(days => $2)"
                " WHERE id = $1",
                uuid.UUID(job_id),
                age,
            )
    jobs = service.job_service()
    assert await jobs.expire(30) >= 2
    rows = [await store.get(uuid.UUID(i)) for i in ids]
    assert [r.audio_key is None for r in rows] == [True, True, False]
    assert not [p for p in stored_files(blob_root) if ids[0] in str(p) or ids[1] in str(p)]
    assert await jobs.expire(30, results=True) >= 2
    assert [await store.get(uuid.UUID(i)) is None for i in ids] == [True, True, False]


async def test_an_upload_over_a_limit_is_refused_before_its_body_is_read(app):
    client, store, _ = app
    name = f"rate-{uuid.uuid4().hex[:6]}"
    limited = await tenant(store, name, requests_per_minute=1)  # set before its key is first used
    assert (await client.get("/api/v1/transcriptions", headers=limited)).status_code == 200  # its one request
    sent = []

    async def body():
        for _ in range(320):  # 20 MiB in 64 KiB blocks
            sent.append(1)
            yield b"\0" * 65536

    boundary = {"Content-Type": "multipart/form-data; boundary=x"}
    for path in ("/api/v1/batches", "/api/v1/transcriptions", "/v1/audio/transcriptions"):
        sent.clear()
        answer = await client.post(path, content=body(), headers={**limited, **boundary})
        assert answer.status_code == 429, (path, answer.text)
        assert len(sent) <= 2, (path, len(sent))  # the body was never read
