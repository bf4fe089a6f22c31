"""Async jobs end to end in one process: API -> PostgreSQL + BlobStore -> JobWorker -> result.

The same tests run with the local BlobStore and with s3fs against a real S3-protocol server.
Models and speech are real (LocalBackend runs the library code the deployments run).
"""

from __future__ import annotations

import asyncio
import base64
import io
import time
import urllib.parse
import uuid

import srt
import webvtt

from serve_app.jobs.webhooks import WebhookSender, tenant_secret, verify
from serve_app.tenancy.keys import Principal
from serve_app.transcription.request import TranscriptionRequest
from testkit.speech import audio, transcripts, wer
from tests.app.conftest import SECRET
from tests.conftest import BOTH_BLOB_STORES
from tests.job_rows import new_job
from tests.unit.test_webhooks import INTERNAL_IPV6_FORMS
from tests.webhook_receiver import WebhookReceiver


async def submit(client, name, **form):
    response = await client.post(
        "/api/v1/transcriptions", files={"file": (name, audio(name))}, data={"sync": "false", **form}
    )
    assert response.status_code == 202, response.text
    return response.json()["id"]


async def wait_done(client, job_id, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = (await client.get(f"/api/v1/transcriptions/{job_id}")).json()
        if body["status"] in ("COMPLETED", "FAILED"):
            return body
        await asyncio.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish: {body}")


@BOTH_BLOB_STORES
async def test_async_job_completes_and_downloads(service):
    client, store, blobs, *_ = service
    job_id = await submit(client, "harvard_long.flac")
    row = await store.get(uuid.UUID(job_id))
    assert row.status in ("PENDING", "PROCESSING") and await blobs.exists(row.audio_key)
    body = await wait_done(client, job_id)
    assert body["status"] == "COMPLETED" and body["progress"] == 1
    assert wer(transcripts()["harvard_long.flac"], body["result"]["text"]) < 15
    txt = await client.get(f"/api/v1/transcriptions/{job_id}/download", params={"format": "txt"})
    assert "harvard_long.txt" in txt.headers["content-disposition"]
    assert wer(transcripts()["harvard_long.flac"], txt.text) < 15
    subs = list(srt.parse((await client.get(f"/api/v1/transcriptions/{job_id}/download?format=srt")).text))
    assert len(subs) >= 3
    vtt = (await client.get(f"/api/v1/transcriptions/{job_id}/download?format=vtt")).text
    assert len(webvtt.from_buffer(io.StringIO(vtt)).captions) == len(subs)
    tsv = (await client.get(f"/api/v1/transcriptions/{job_id}/download?format=tsv")).text
    assert tsv.startswith("start\tend\ttext")
    as_json = (await client.get(f"/api/v1/transcriptions/{job_id}/download?format=json")).json()
    assert as_json["id"] == job_id

    # Delete removes the row and both blobs.
    assert (await client.delete(f"/api/v1/transcriptions/{job_id}")).status_code == 204
    assert (await client.get(f"/api/v1/transcriptions/{job_id}")).status_code == 404
    assert not await blobs.exists(row.audio_key)
    assert not await blobs.exists(f"results/default/{job_id}.json")
    assert row.audio_key.startswith(f"audio/default/{job_id}/")  # blob keys carry the tenant


async def test_bad_audio_job_fails_with_reason_and_no_retry(service):
    client, *_ = service
    # Bytes that are not audio are refused before a job exists (tests/app/test_abuse.py) ...
    refused = await client.post(
        "/api/v1/transcriptions", files={"file": ("notes.wav", b"just text" * 100)}, data={"sync": "false"}
    )
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_audio"
    # ... audio whose end is cut off starts well and fails in the worker, once, not retried.
    whole = audio("harvard_long.flac")
    response = await client.post(
        "/api/v1/transcriptions", files={"file": ("cut.flac", whole[: len(whole) // 2])}, data={"sync": "false"}
    )
    body = await wait_done(client, response.json()["id"])
    assert body["status"] == "FAILED" and "truncated" in body["error"] and body["attempts"] == 1
    download = await client.get(f"/api/v1/transcriptions/{body['id']}/download")
    assert download.status_code == 409


async def test_sync_requests_are_recorded_as_jobs(service):
    client, *_ = service
    result = (await client.post("/api/v1/transcriptions", files={"file": ("s.wav", audio("harvard_08.wav"))})).json()
    job = (await client.get(f"/api/v1/transcriptions/{result['id']}")).json()
    assert job["status"] == "COMPLETED" and job["sync"] and job["result"]["text"] == result["text"]
    bad = await client.post("/api/v1/transcriptions", files={"file": ("bad.wav", b"nope" * 100)})
    assert bad.status_code == 400
    failed, _ = await service[1].list("default", status="FAILED", search="bad")
    assert failed and failed[0].is_sync and "not audio" in failed[0].error


async def test_job_api_errors(service):
    client, *_ = service
    unknown = "00000000-0000-0000-0000-000000000000"
    for path in (
        f"/api/v1/transcriptions/{unknown}",
        "/api/v1/transcriptions/not-a-uuid",
        f"/api/v1/transcriptions/{unknown}/download",
    ):
        response = await client.get(path)
        assert response.status_code == 404 and response.json()["error"]["code"] == "job_not_found"
    assert (await client.delete(f"/api/v1/transcriptions/{unknown}")).status_code == 404
    for params in ({"limit": 0}, {"limit": 1000}, {"cursor": "garbage"}, {"status": "DONE"}):
        assert (await client.get("/api/v1/transcriptions", params=params)).status_code == 422, params
    # A job still running (held by a request that has not finished) is not downloadable yet.
    held = await new_job(service[1], filename="running.wav", sync_owner="sync:still-running")
    early = await client.get(f"/api/v1/transcriptions/{held.id}/download")
    assert early.status_code == 409 and early.json()["error"]["code"] == "job_not_finished"
    assert "PROCESSING" in early.json()["error"]["message"]
    await service[1].fail(held.id, "sync:still-running", "test over", retry=False)
    pending_id = await submit(client, "harvard_07.wav")
    await wait_done(client, pending_id)
    fmt = await client.get(f"/api/v1/transcriptions/{pending_id}/download", params={"format": "docx"})
    assert fmt.status_code == 422
    hook = await client.post(
        "/api/v1/transcriptions", files={"file": ("a.wav", b"x")}, data={"sync": "false", "webhook_url": "ftp://x"}
    )
    assert hook.status_code == 422
    for hostile in ("http://x/\x00", "http://x/" + "a" * 3000):
        refused = await client.post(
            "/api/v1/transcriptions", files={"file": ("a.wav", b"x")}, data={"sync": "false", "webhook_url": hostile}
        )
        assert refused.status_code == 422 and refused.json()["error"]["code"] == "invalid_webhook_url"


async def test_nul_bytes_in_fields_are_refused_or_cleaned_never_a_5xx(service):
    client, *_ = service
    nul = await client.post(
        "/api/v1/transcriptions", files={"file": ("a.wav", audio("harvard_08.wav"))}, data={"prompt": "x\x00y"}
    )
    assert nul.status_code == 422 and nul.json()["error"] == {
        "code": "invalid_parameter",
        "message": "prompt: Value error, must not contain control characters",
    }
    # httpx would percent-encode the NUL: send the multipart body as a hostile client writes it.
    head = b'--x\r\nContent-Disposition: form-data; name="file"; filename="a\x00b\x1b.wav"\r\n\r\n'
    named = await client.post(
        "/api/v1/transcriptions",
        content=head + audio("harvard_08.wav") + b"\r\n--x--\r\n",
        headers={"content-type": "multipart/form-data; boundary=x"},
    )
    assert named.status_code == 200, named.text
    assert (await client.get(f"/api/v1/transcriptions/{named.json()['id']}")).json()["filename"] == "ab.wav"


async def test_listing_and_stats(service):
    client, *_ = service
    ids = [await submit(client, "harvard_01.wav"), await submit(client, "harvard_02.wav")]
    for job_id in ids:
        await wait_done(client, job_id)
    page = (await client.get("/api/v1/transcriptions", params={"limit": 1})).json()
    assert len(page["items"]) == 1 and page["next_cursor"]
    second = (await client.get("/api/v1/transcriptions", params={"limit": 1, "cursor": page["next_cursor"]})).json()
    assert second["items"][0]["id"] != page["items"][0]["id"]
    assert second["items"][0]["created_at"] <= page["items"][0]["created_at"]
    found = (await client.get("/api/v1/transcriptions", params={"q": "harvard_02.wav", "status": "COMPLETED"})).json()
    assert found["items"] and all(i["filename"] == "harvard_02.wav" for i in found["items"])
    stats = (await client.get("/api/v1/stats")).json()
    assert stats["last_24h"]["completed"] >= 2 and stats["last_24h"]["avg_processing_seconds"] > 0
    assert "queue_depth" in stats and "processing" in stats


async def test_webhook_is_signed_and_retried(service):
    client, store, *_ = service
    receiver = WebhookReceiver(statuses=[500, 503])  # fails twice, takes the third
    try:
        job_id = await submit(client, "harvard_03.wav", webhook_url=receiver.url)
        await wait_done(client, job_id)
        deadline = time.monotonic() + 30
        while len(receiver.deliveries) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    finally:
        receiver.close()
    assert [d["answered"] for d in receiver.deliveries] == [500, 503, 200]
    last = receiver.deliveries[-1]
    # Standard Webhooks: signed with the tenant's own secret (derived from the master key, not
    # the master key itself) over id.timestamp.body; one id for every attempt of the message.
    headers, body = last["headers"], last["body"]
    assert verify(tenant_secret(SECRET, "default"), headers, body)
    assert not verify(tenant_secret(SECRET, "other"), headers, body)
    assert not verify(tenant_secret(SECRET, "default"), headers, body + b" ")
    replayed_later = int(headers["webhook-timestamp"]) + 3600
    assert not verify(tenant_secret(SECRET, "default"), headers, body, now=replayed_later)
    assert len({d["headers"]["webhook-id"] for d in receiver.deliveries}) == 1
    secret = (await client.get("/api/v1/webhook-secret")).json()
    assert secret == {"tenant": "default", "generation": 0, "secret": tenant_secret(SECRET, "default")}
    assert secret["secret"].startswith("whsec_")
    assert last["json"]["event"] == "job.completed" and last["json"]["id"] == job_id
    assert "birch" not in last["json"]["result"]["text"] and last["json"]["result"]["text"]
    await asyncio.sleep(0.3)
    attempts = await store.deliveries(uuid.UUID(job_id))
    assert [(a["attempt"], a["delivered"]) for a in attempts] == [(1, False), (2, False), (3, True)]


async def test_streamed_transcription_comes_in_parts_and_is_recorded_once(service):
    """The in-process flow is the production one: a long upload streams one part per chunk."""
    *_, transcription = service
    name = f"long-{uuid.uuid4().hex}.flac"
    upload = transcription.upload(audio("harvard_long.flac"), name)
    resolved = transcription.resolve(TranscriptionRequest(model="tiny.en"))
    items = [
        p async for p in transcription.stream(resolved, upload, caller=Principal("default"), request_id="stream-test")
    ]
    *parts, result = items  # each part as it was decoded, then the stored result
    assert result.duration > parts[-1].segments[-1].end
    assert len(parts) >= 3 and all(p.segments for p in parts)
    streamed = " ".join(p.text for p in parts)
    assert wer(transcripts()["harvard_long.flac"], streamed) < 15
    [job] = [j for j in (await transcription.jobs.store.list("default", limit=100))[0] if j.original_filename == name]
    assert job.status == "COMPLETED" and job.is_sync
    stored = await transcription.jobs.result(job)
    assert stored.text == streamed and [s.id for s in stored.segments] == list(range(len(stored.segments)))
    assert stored.processing_time == job.processing_seconds > 0  # one number, in the row and the result


async def test_a_client_that_leaves_mid_stream_fails_the_job_and_drops_the_rest(service):
    *_, transcription = service
    name = f"left-early-{uuid.uuid4().hex}.flac"
    upload = transcription.upload(audio("harvard_long.flac"), name)
    resolved = transcription.resolve(TranscriptionRequest())
    parts = transcription.stream(resolved, upload, caller=Principal("default"), request_id="leaves-early")
    assert (await anext(parts)).segments
    await parts.aclose()
    [job] = [j for j in (await transcription.jobs.store.list("default", limit=100))[0] if j.original_filename == name]
    assert job.status == "FAILED" and "went away" in job.error


async def test_hostile_list_and_download_inputs_get_4xx_and_any_file_name_downloads(service):
    client, *_ = service
    cursor = base64.urlsafe_b64encode(f"9999-12-31T23:59:59-14:00|{uuid.uuid4()}".encode()).decode()
    far = await client.get("/api/v1/transcriptions", params={"cursor": cursor})
    assert far.status_code == 422 and far.json()["error"]["code"] == "invalid_cursor"
    nul = await client.get("/api/v1/transcriptions", params={"q": "meet\x00ing"})
    assert nul.status_code == 422 and nul.json()["error"]["code"] == "invalid_parameter"

    name = "日本語_🎤_speech.wav"
    done = await client.post("/api/v1/transcriptions", files={"file": (name, audio("harvard_08.wav"))})
    assert done.status_code == 200, done.text
    download = await client.get(f"/api/v1/transcriptions/{done.json()['id']}/download")
    assert download.status_code == 200
    disposition = download.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="') and disposition.isascii()
    assert urllib.parse.unquote(disposition.split("filename*=UTF-8''")[1]) == "日本語_🎤_speech.txt"


async def test_request_ids_are_echoed_only_when_sane(service):
    client, *_ = service
    sane = await client.get("/api/v1/health", headers={"x-request-id": "client-42.a:b"})
    assert sane.headers["x-request-id"] == "client-42.a:b"
    huge = await client.get("/api/v1/health", headers={"x-request-id": "x" * 10_000})
    assert huge.status_code == 200 and len(huge.headers["x-request-id"]) == 32


async def test_webhooks_into_the_network_are_refused_at_submission_and_at_delivery(service):
    client, store, *_ = service
    # (127.0.0.1 itself is allowed in this fixture, for the receivers; other loopback is not)
    for url in (
        "http://127.0.0.2:5432/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:8265/api/jobs/",
        *INTERNAL_IPV6_FORMS,
    ):
        response = await client.post(
            "/api/v1/transcriptions",
            files={"file": ("a.wav", audio("harvard_08.wav"))},
            data={"sync": "false", "webhook_url": url},
        )
        assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_webhook_url", url
    # A sender without the allow-list refuses the loopback receiver at delivery and sends nothing.
    receiver = WebhookReceiver(statuses=[])
    try:
        job = await new_job(store, filename="hook.wav", webhook_url=receiver.url)
        sent = await WebhookSender(SECRET, max_attempts=3, backoff_seconds=0).deliver(
            store, job, "job.completed", {"id": str(job.id)}
        )
    finally:
        receiver.close()
    assert sent is False and receiver.deliveries == []
    [attempt] = await store.deliveries(job.id)
    assert not attempt["delivered"] and attempt["error"].startswith("refused: webhook_url's host '127.0.0.1'")
    # A URL that passed at submission but points inside at delivery (a name that now resolves
    # elsewhere reads the same to the sender) is refused there too, in every IPv6 spelling.
    for url in INTERNAL_IPV6_FORMS:
        job = await new_job(store, filename="hook.wav", webhook_url=url)
        sender = WebhookSender(SECRET, max_attempts=1)
        assert await sender.deliver(store, job, "job.completed", {"id": str(job.id)}) is False
        [attempt] = await store.deliveries(job.id)
        assert attempt["error"].startswith("refused: webhook_url's host"), (url, attempt["error"])


async def test_the_request_id_is_carried_into_the_job_row_and_its_webhook(service):
    client, *_ = service
    receiver = WebhookReceiver()
    try:
        response = await client.post(
            "/api/v1/transcriptions",
            files={"file": ("traced.wav", audio("harvard_05.wav"))},
            data={"sync": "false", "webhook_url": receiver.url},
            headers={"X-Request-ID": "trace-4711"},
        )
        assert response.status_code == 202 and response.headers["x-request-id"] == "trace-4711"
        body = await wait_done(client, response.json()["id"])
        deadline = time.monotonic() + 30
        while not receiver.deliveries and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    finally:
        receiver.close()
    assert body["request_id"] == "trace-4711"
    [delivery] = receiver.deliveries
    assert delivery["headers"]["X-Request-ID"] == "trace-4711" and delivery["json"]["request_id"] == "trace-4711"
    synced = await client.post(
        "/api/v1/transcriptions", files={"file": ("s.wav", audio("harvard_05.wav"))}, headers={"X-Request-ID": "sync-1"}
    )
    assert (await client.get(f"/api/v1/transcriptions/{synced.json()['id']}")).json()["request_id"] == "sync-1"
    generated = await client.post("/api/v1/transcriptions", files={"file": ("g.wav", audio("harvard_05.wav"))})
    view = (await client.get(f"/api/v1/transcriptions/{generated.json()['id']}")).json()
    assert view["request_id"] == generated.headers["x-request-id"]  # none given: the one generated


async def test_a_worker_that_stops_hands_its_job_back_without_spending_an_attempt(service):
    client, store, _, worker, svc = service
    job_id = await submit(client, "harvard_long.flac")
    deadline = time.monotonic() + 60
    while (await client.get(f"/api/v1/transcriptions/{job_id}")).json()["status"] != "PROCESSING":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert worker.running == 1  # what the deployment reports to its autoscaling policy
    await worker.close()  # what Serve's scale-down does to a JobWorker replica
    row = await store.get(uuid.UUID(job_id))
    assert (row.status, row.attempts, row.lease_owner) == ("PENDING", 0, None)

    successor = svc.job_worker(lease_seconds=10, poll_seconds=0.5)
    loop = asyncio.create_task(successor.run())
    try:
        body = await wait_done(client, job_id)
    finally:
        loop.cancel()
        await successor.close()
    assert body["status"] == "COMPLETED" and body["attempts"] == 1
    assert wer(transcripts()["harvard_long.flac"], body["result"]["text"]) < 15


async def test_a_job_whose_replica_died_is_tried_again_not_failed(service):
    """A replica dying with its node reaches the worker as a 503 ``ModelUnavailable`` (what
    deployments.ingress maps Ray's actor errors to); in one process that is simulated by a
    backend that fails the first call so. The job goes back to the queue and completes."""
    from serve_app.core.errors import ModelUnavailable

    client, *_, svc = service
    real, calls = svc.backend.transcribe, []

    async def first_call_loses_its_replica(*args):
        calls.append(1)
        if len(calls) == 1:
            raise ModelUnavailable("The replica working on this request went away; retry in a few seconds.")
        async for item in real(*args):
            yield item

    svc.backend.transcribe = first_call_loses_its_replica
    try:
        body = await wait_done(client, await submit(client, "harvard_03.wav"))
    finally:
        del svc.backend.transcribe
    assert body["status"] == "COMPLETED" and body["attempts"] == 2, body
