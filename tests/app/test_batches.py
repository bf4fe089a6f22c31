"""Batches end to end in one process: many files as one unit, real models and speech, the real
PostgreSQL and BlobStore (local and S3)."""

from __future__ import annotations

import asyncio
import io
import time
import uuid
import zipfile

import srt

from serve_app.audio.decode import decode
from testkit.speech import audio, transcripts, wer
from tests.conftest import BOTH_BLOB_STORES
from tests.webhook_receiver import WebhookReceiver

FILES = [f"harvard_0{n}.wav" for n in range(1, 9)] + ["harvard_long.flac"]


async def wait_batch(client, batch_id, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = (await client.get(f"/api/v1/batches/{batch_id}")).json()
        if body["status"] not in ("PENDING", "PROCESSING"):
            return body
        await asyncio.sleep(0.3)
    raise AssertionError(f"batch {batch_id} still {body['status']}")


async def test_a_batch_of_uploads_completes_longest_first_zips_and_announces_its_end_once(service):
    client, store, *_ = service
    receiver = WebhookReceiver()
    try:
        files = [("files", (name, audio(name))) for name in FILES] + [("files", ("notes.txt", b"not audio"))]
        response = await client.post("/api/v1/batches", files=files, data={"webhook_url": receiver.url})
        assert response.status_code == 202, response.text
        batch_id = response.json()["id"]
        body = await wait_batch(client, batch_id)
        deadline = time.monotonic() + 10
        while not receiver.deliveries and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    finally:
        receiver.close()
    assert body["status"] == "PARTIAL" and body["aggregate"]["completed"] == 9 and body["aggregate"]["failed"] == 1
    by_name = {f["filename"]: f for f in body["files"]}
    assert by_name["notes.txt"]["status"] == "FAILED" and "not audio" in by_name["notes.txt"]["error"]
    # Queued longest first: the long file's job is the first of the batch.
    durations = [len(decode(audio(f["filename"]))) for f in body["files"] if f["filename"] != "notes.txt"]
    assert body["files"][0]["filename"] == "harvard_long.flac" and durations == sorted(durations, reverse=True)
    for name in FILES:
        job = (await client.get(f"/api/v1/transcriptions/{by_name[name]['id']}")).json()
        assert wer(transcripts()[name], job["result"]["text"]) < 30, name
    # One webhook, when the whole batch ended.
    assert len(receiver.deliveries) == 1
    hook = receiver.deliveries[0]["json"]
    assert hook["event"] == "batch.ended" and hook["id"] == batch_id and hook["status"] == "PARTIAL"
    assert hook["completed"] == 9 and hook["failed"] == 1
    # Every transcript in one zip, named after its audio; the failed file listed.
    zipped = await client.get(f"/api/v1/batches/{batch_id}/download", params={"format": "srt"})
    assert zipped.status_code == 200 and zipped.headers["content-type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(zipped.content))
    assert sorted(archive.namelist()) == sorted([n.rsplit(".", 1)[0] + ".srt" for n in FILES] + ["ERRORS.txt"])
    cues = list(srt.parse(archive.read("harvard_long.srt").decode()))
    assert cues and cues[-1].end.total_seconds() > 60
    assert "notes.txt" in archive.read("ERRORS.txt").decode()
    # Deleted with its jobs.
    assert (await client.delete(f"/api/v1/batches/{batch_id}")).status_code == 204
    assert (await client.get(f"/api/v1/batches/{batch_id}")).status_code == 404
    assert (await client.get(f"/api/v1/transcriptions/{by_name['harvard_01.wav']['id']}")).status_code == 404


@BOTH_BLOB_STORES
async def test_a_batch_of_stored_objects_and_its_refusals(service):
    client, store, blobs, *_ = service
    for name in FILES[:3]:
        await blobs.put_bytes(f"inbox/default/meeting/{name}", audio(name))
    keys = [f"inbox/default/meeting/{name}" for name in FILES[:3]]
    response = await client.post("/api/v1/batches", data={"keys": keys, "model": "auto", "quality": "speed"})
    assert response.status_code == 202, response.text
    body = await wait_batch(client, response.json()["id"])
    assert body["status"] == "COMPLETED" and {f["model"] for f in body["files"]} == {"tiny.en"}
    assert all([await blobs.exists(k) for k in keys])  # the tenant's own objects are copied, not taken
    await client.delete(f"/api/v1/batches/{body['id']}")
    assert all([await blobs.exists(k) for k in keys])

    foreign = await client.post("/api/v1/batches", data={"keys": ["inbox/other-tenant/x.wav"]})
    assert foreign.status_code == 422 and "inbox/default/" in foreign.json()["error"]["message"]
    climbing = await client.post("/api/v1/batches", data={"keys": ["inbox/default/../other/x.wav"]})
    assert climbing.status_code == 422
    missing = await client.post("/api/v1/batches", data={"keys": ["inbox/default/nothing-here.wav"]})
    assert missing.status_code == 422 and missing.json()["error"]["code"] == "object_not_found"
    empty = await client.post("/api/v1/batches", data={"model": "tiny.en"})
    assert empty.status_code == 422
    assert (await client.get(f"/api/v1/batches/{uuid.uuid4()}")).status_code == 404
    assert (await client.get("/api/v1/batches/nul%00")).status_code in (404, 422)


async def test_zip_entries_are_plain_names_that_never_clash_with_the_error_list(service):
    client, *_ = service
    clip = audio("harvard_08.wav")
    names = ["..\\..\\evil.wav", "../../etc/cron.d/x.wav", "ERRORS.wav", "errors.mp3", "C:\\a.wav"]
    files = [("files", (name, clip)) for name in names] + [("files", ("not-audio.wav", b"nope" * 100))]
    response = await client.post("/api/v1/batches", files=files, data={"model": "tiny.en"})
    assert response.status_code == 202, response.text
    batch_id = response.json()["id"]
    await wait_batch(client, batch_id)
    zipped = await client.get(f"/api/v1/batches/{batch_id}/download")
    assert zipped.status_code == 200 and "content-length" not in zipped.headers  # streamed
    archive = zipfile.ZipFile(io.BytesIO(zipped.content))
    assert archive.testzip() is None
    entries = archive.namelist()
    assert all("/" not in n and "\\" not in n and ":" not in n and not n.startswith(".") for n in entries), entries
    # (What names arrive depends on the client's multipart encoding; whatever they are, each is
    # one plain name, no two alike whatever their case, and the error list keeps its own.)
    assert len(entries) == 6 and len({n.lower() for n in entries}) == 6, entries
    assert {"ERRORS (2).txt", "errors (3).txt", "ERRORS.txt"} <= set(entries), entries
    assert "not-audio.wav" in archive.read("ERRORS.txt").decode()
