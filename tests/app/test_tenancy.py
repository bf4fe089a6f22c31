"""Tenants and protection in-process: API keys, modes, object-level authorization, limits, the CLI.

Real PostgreSQL (a database of this module's own: making a key ends the open mode), real
blobs on disk, the real tiny.en model for the transcriptions.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

import httpx
import openai
import pydantic
import pytest

from serve_app.api import create_app
from serve_app.core.settings import Settings
from serve_app.jobs.blobs import BlobStore
from serve_app.jobs.service import JobService
from serve_app.jobs.store import JobStore
from serve_app.tenancy.keys import KeyStore
from serve_app.tenancy.limits import Limits, burst
from serve_app.transcription.service import TranscriptionService
from testkit.speech import audio
from tests.job_rows import new_job

REPO = Path(__file__).resolve().parents[2]
TTL = 0.5  # the key cache of this app: revocations and limits show within it
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def keyed_settings(keyed_dsn, tmp_path_factory):
    return Settings(
        database_url=keyed_dsn,
        blob_url=f"file://{tmp_path_factory.mktemp('tenancy-blobs')}",
        auth_cache_seconds=TTL,
        webhook_secret="tenancy-tests-webhook-secret",
        limit_bad_keys_per_minute=0,  # wrong keys on purpose, many (tests/app/test_abuse.py checks that limit)
    )


@pytest.fixture
async def app(keyed_settings, catalog, backend_for):
    settings = keyed_settings
    store = JobStore(settings.database_url)
    blobs = BlobStore.from_settings(settings)
    service = TranscriptionService(settings, catalog, backend_for(settings, blobs), JobService(store, blobs))
    api = create_app(service)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://localhost", timeout=120)
    yield client, store, api
    await client.aclose()
    await store.close()


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
async def keys(app):
    """An admin (tenant ops) and two users (alice, bob) without a request rate limit, made once."""
    _, store, _ = app
    made = getattr(keys, "made", None)
    if made is None:
        ks = KeyStore(store)
        made = {}
        for tenant, role in (("ops", "admin"), ("alice", "user"), ("bob", "user")):
            made[tenant] = (await ks.create(tenant, role=role, name=f"{tenant} tests"))[1]
            await ks.set_limits(tenant, Limits(requests_per_minute=0))  # these tests make many requests
        keys.made = made
        await asyncio.sleep(TTL)
    return made


async def sync_job(client, key, name="harvard_01.wav") -> str:
    response = await client.post(
        "/api/v1/transcriptions", files={"file": (name, audio("harvard_01.wav"))}, headers=bearer(key)
    )
    assert response.status_code == 200, response.text
    return response.json()["id"]


async def test_open_for_one_local_user_until_the_first_key_is_made(app):
    client, store, _ = app
    assert not await KeyStore(store).any_keys(), "this test must run before the module's keys exist"
    open_answer = await client.get("/api/v1/stats")
    assert open_answer.status_code == 200 and "RateLimit" not in open_answer.headers  # the local user: no limits
    await KeyStore(store).create("first", role="admin")
    await asyncio.sleep(TTL + 0.1)
    closed = await client.get("/api/v1/stats")
    assert closed.status_code == 401 and closed.json()["error"]["code"] == "invalid_api_key"
    for path in ("/api/v1/health", "/api/v1/models", "/api/v1/languages"):  # probes stay open
        assert (await client.get(path)).status_code == 200, path


async def test_keys_are_stored_hashed_and_shown_once(app, keys):
    client, store, _ = app
    created = await client.post("/api/v1/admin/keys", json={"tenant": "hashed"}, headers=bearer(keys["ops"]))
    assert created.status_code == 201, created.text
    body = created.json()
    full = body["key"]
    _, key_id, secret = full.split("_")
    assert body["id"] == key_id and len(secret) == 64 and body["tenant"] == "hashed" and body["role"] == "user"
    async with store.connection() as conn:
        row = dict(await conn.fetchrow("SELECT * FROM api_keys WHERE id = $1", key_id))
    assert bytes(row["secret_sha256"]) == hashlib.sha256(secret.encode()).digest()
    assert all(secret not in str(v) for v in row.values() if not isinstance(v, bytes))
    listed = (await client.get("/api/v1/admin/keys", params={"tenant": "hashed"}, headers=bearer(keys["ops"]))).json()
    assert [k["id"] for k in listed["keys"]] == [key_id]
    assert secret not in json.dumps(listed) and "key" not in listed["keys"][0]
    used = await client.get("/api/v1/stats", headers=bearer(full))
    assert used.status_code == 200
    async with store.connection() as conn:
        assert await conn.fetchval("SELECT last_used_at FROM api_keys WHERE id = $1", key_id) is not None


@pytest.mark.parametrize(
    "header",
    [
        {},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer stt_"},
        {"Authorization": "Bearer stt_000000000000_" + "0" * 64},  # unknown id
        {"Authorization": "Bearer stt_zzzzzzzzzzzz_" + "0" * 64},
        {"Authorization": "Bearer " + "A" * 5000},
        {"Authorization": "Bearer stt_' OR 1=1 --"},
        {"X-API-Key": "stt_%00_%00"},
    ],
)
async def test_bad_keys_are_401(app, keys, header):
    client, *_ = app
    response = await client.get("/api/v1/transcriptions", headers=header)
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
    sdk_route = await client.get("/v1/models", headers=header)
    assert sdk_route.status_code == 401 and sdk_route.json()["error"]["type"] == "authentication_error"


async def test_a_wrong_secret_an_expired_and_a_revoked_key_are_refused(app, keys):
    client, store, _ = app
    ks = KeyStore(store)
    _, good = await ks.create("alice")
    key_id = good.split("_")[1]
    wrong = f"stt_{key_id}_{'f' * 64}"
    assert (await client.get("/api/v1/stats", headers=bearer(wrong))).status_code == 401
    _, old = await ks.create("alice", expires_at=datetime(2020, 1, 1))
    expired = await client.get("/api/v1/stats", headers=bearer(old))
    assert expired.status_code == 401 and "expired" in expired.json()["error"]["message"]
    assert (await client.get("/api/v1/stats", headers=bearer(good))).status_code == 200
    # Revoked elsewhere (another replica, the CLI): refused here once the cache entry is older than TTL.
    await ks.revoke(key_id)
    started = time.monotonic()
    while True:
        sent = time.monotonic() - started
        if (await client.get("/api/v1/stats", headers=bearer(good))).status_code != 200:
            break
        # Let through: it must have been sent within the cache time (a generous deadline aside).
        assert sent < TTL, f"a request sent {sent:.2f} s after the revocation was let through"
        await asyncio.sleep(0.05)
    refused = await client.get("/api/v1/stats", headers=bearer(good))
    assert refused.status_code == 401 and "revoked" in refused.json()["error"]["message"]


async def test_revoking_through_the_admin_route_is_immediate_on_this_replica(app, keys):
    client, store, _ = app
    _, key = await KeyStore(store).create("alice")
    assert (await client.get("/api/v1/stats", headers=bearer(key))).status_code == 200
    gone = await client.delete(f"/api/v1/admin/keys/{key.split('_')[1]}", headers=bearer(keys["ops"]))
    assert gone.status_code == 204
    assert (await client.get("/api/v1/stats", headers=bearer(key))).status_code == 401
    missing = await client.delete("/api/v1/admin/keys/000000000000", headers=bearer(keys["ops"]))
    assert missing.status_code == 404


async def test_admin_routes_need_an_admin_key(app, keys):
    client, *_ = app
    for method, path, body in (
        ("GET", "/api/v1/admin/keys", None),
        ("POST", "/api/v1/admin/keys", {"tenant": "alice", "role": "admin"}),
        ("DELETE", "/api/v1/admin/keys/000000000000", None),
        ("PUT", "/api/v1/admin/tenants/alice/limits", {"requests_per_minute": 0}),
    ):
        response = await client.request(method, path, json=body, headers=bearer(keys["alice"]))
        assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden", path
    for bad in ({"tenant": "../etc"}, {"tenant": "a\x00b"}, {"tenant": "x", "role": "root"}, {"tenant": "x", "y": 1}):
        response = await client.post("/api/v1/admin/keys", json=bad, headers=bearer(keys["ops"]))
        assert response.status_code == 422, bad


async def test_no_tenant_reaches_another_tenants_objects(app, keys):
    """Every route on the other tenant's objects, both directions: 0 successes, and the same
    404 as for an id that does not exist (existence is not revealed)."""
    client, store, _ = app
    owned = {}
    for tenant in ("alice", "bob"):
        key = keys[tenant]
        sync_id = await sync_job(client, key, f"{tenant}-secret-meeting.wav")
        sdk = openai.AsyncOpenAI(
            api_key=key,
            base_url="http://localhost/v1",
            http_client=httpx.AsyncClient(transport=httpx.ASGITransport(app=app[2]), base_url="http://localhost"),
            max_retries=0,
        )
        await sdk.audio.transcriptions.create(file=(f"{tenant}-openai.wav", audio("harvard_02.wav")), model="tiny.en")
        submitted = await client.post(
            "/api/v1/transcriptions",
            files={"file": (f"{tenant}-async.wav", audio("harvard_03.wav"))},
            data={"sync": "false"},
            headers=bearer(key),
        )
        assert submitted.status_code == 202
        page = (await client.get("/api/v1/transcriptions", headers=bearer(key))).json()["items"]
        names = {j["filename"]: j["id"] for j in page}
        assert {f"{tenant}-secret-meeting.wav", f"{tenant}-openai.wav", f"{tenant}-async.wav"} <= set(names)
        owned[tenant] = [sync_id, names[f"{tenant}-openai.wav"], submitted.json()["id"]]
        job = await store.get(uuid.UUID(submitted.json()["id"]))
        assert job.user_id == tenant and job.audio_key.startswith(f"audio/{tenant}/")

    nowhere = str(uuid.uuid4())
    tried = successes = 0
    for me, other in (("alice", "bob"), ("bob", "alice")):
        headers = bearer(keys[me])
        for job_id in owned[other]:
            for method, path in [
                ("GET", f"/api/v1/transcriptions/{job_id}"),
                *[("GET", f"/api/v1/transcriptions/{job_id}/download?format={f}") for f in ("txt", "json", "srt")],
                ("GET", f"/api/v1/transcriptions/{job_id}/events"),
                ("GET", f"/api/v1/transcriptions/{job_id}/audio"),
                ("DELETE", f"/api/v1/transcriptions/{job_id}"),
            ]:
                response = await client.request(method, path, headers=headers)
                ghost = await client.request(method, path.replace(job_id, nowhere), headers=headers)
                tried += 1
                successes += response.status_code < 400
                assert response.status_code == 404 and response.json()["error"]["code"] == "job_not_found", path
                assert response.json()["error"]["message"].replace(job_id, "X") == ghost.json()["error"][
                    "message"
                ].replace(nowhere, "X")
        mine = (await client.get("/api/v1/transcriptions?limit=100", headers=headers)).json()["items"]
        assert not {j["id"] for j in mine} & set(owned[other])
        searched = (await client.get(f"/api/v1/transcriptions?q={other}", headers=headers)).json()["items"]
        assert searched == []
        asked = await client.get(f"/api/v1/transcriptions?tenant={other}", headers=headers)
        assert asked.status_code == 403
        assert (await client.get(f"/api/v1/stats?tenant={other}", headers=headers)).status_code == 403
    assert tried == 42 and successes == 0
    # Batches: another tenant's is a 404 on every route, as one that does not exist.
    batches = {}
    for tenant in ("alice", "bob"):
        made = await client.post(
            "/api/v1/batches", files=[("files", ("b.wav", audio("harvard_04.wav")))], headers=bearer(keys[tenant])
        )
        assert made.status_code == 202
        batches[tenant] = made.json()["id"]
    for me, other in (("alice", "bob"), ("bob", "alice")):
        for method, path in [
            ("GET", f"/api/v1/batches/{batches[other]}"),
            ("GET", f"/api/v1/batches/{batches[other]}/download"),
            ("DELETE", f"/api/v1/batches/{batches[other]}"),
        ]:
            response = await client.request(method, path, headers=bearer(keys[me]))
            assert response.status_code == 404 and response.json()["error"]["code"] == "batch_not_found", path
        own = await client.get(f"/api/v1/batches/{batches[me]}", headers=bearer(keys[me]))
        assert own.status_code == 200 and own.json()["files"][0]["filename"] == "b.wav"
    # Still there for their owners; an admin reads them with an explicit tenant filter.
    for tenant, ids in owned.items():
        for job_id in ids:
            assert (
                await client.get(f"/api/v1/transcriptions/{job_id}", headers=bearer(keys[tenant]))
            ).status_code == 200
    # The web page's player: an async job's audio as uploaded; a sync one kept none.
    sync_id, _, async_id = owned["alice"]
    played = await client.get(f"/api/v1/transcriptions/{async_id}/audio", headers=bearer(keys["alice"]))
    assert played.status_code == 200 and played.content == audio("harvard_03.wav")
    assert played.headers["content-type"] == "audio/wav"  # the container found at upload
    none = await client.get(f"/api/v1/transcriptions/{sync_id}/audio", headers=bearer(keys["alice"]))
    assert none.status_code == 404 and none.json()["error"]["code"] == "no_audio"
    seen = (await client.get("/api/v1/transcriptions?tenant=alice&limit=100", headers=bearer(keys["ops"]))).json()
    assert set(owned["alice"]) <= {j["id"] for j in seen["items"]}
    stats = (await client.get("/api/v1/stats?tenant=alice", headers=bearer(keys["ops"]))).json()
    assert stats["last_24h"]["completed"] >= 2


async def test_requests_per_minute_answer_429_with_the_ietf_and_openai_headers(app, keys):
    client, store, _ = app
    ks = KeyStore(store)
    _, key = await ks.create("carol")
    await ks.set_limits("carol", Limits(requests_per_minute=60))
    allowed = burst(60)  # then one per second
    answers = [await client.get("/api/v1/stats", headers=bearer(key)) for _ in range(allowed + 1)]
    assert [a.status_code for a in answers] == [200] * allowed + [429]
    assert answers[0].headers["RateLimit-Policy"] == '"requests";q=60;w=60'
    assert [a.headers["RateLimit"].split(";")[1] for a in answers[:allowed]] == [
        f"r={allowed - 1 - i}" for i in range(allowed)
    ]
    refused = answers[-1]
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert 0 < float(refused.headers["retry-after-ms"]) <= 1000 and refused.headers["Retry-After"] == "1"
    assert "RateLimit" in refused.headers
    await asyncio.sleep(1.0)
    on_v1 = await client.get("/v1/models", headers=bearer(key))
    assert on_v1.status_code == 200 and on_v1.headers["x-ratelimit-limit-requests"] == "60"
    assert {"x-ratelimit-remaining-requests", "x-ratelimit-reset-requests", "ratelimit"} <= set(on_v1.headers)
    sdk = openai.AsyncOpenAI(
        api_key=key,
        base_url="http://localhost/v1",
        http_client=httpx.AsyncClient(transport=httpx.ASGITransport(app=app[2]), base_url="http://localhost"),
        max_retries=0,
    )
    with pytest.raises(openai.RateLimitError) as caught:
        for _ in range(allowed + 1):
            await sdk.models.list()
    assert caught.value.body["code"] == "rate_limit_exceeded" and caught.value.body["type"] == "requests"
    patient = sdk.with_options(max_retries=5)  # the SDK's own backoff reads retry-after-ms
    started = time.monotonic()
    for _ in range(allowed + 2):
        await patient.models.list()
    assert time.monotonic() - started >= 1.0


async def test_concurrent_transcriptions_are_limited_at_admission_and_at_claim(app, keys):
    client, store, _ = app
    ks = KeyStore(store)
    _, key = await ks.create("dave")
    await ks.set_limits("dave", Limits(max_concurrent=1))
    held = await new_job(store, user_id="dave", filename="held.wav", sync_owner="sync:held")
    await asyncio.sleep(TTL)
    refused = await client.post(
        "/api/v1/transcriptions", files={"file": ("a.wav", audio("harvard_01.wav"))}, headers=bearer(key)
    )
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "too_many_concurrent"
    assert refused.headers["Retry-After"] == "1"
    # A worker leaves dave's queued job while dave runs one, and takes it once that one ends.
    queued = await new_job(store, user_id="dave", filename="queued.wav")
    async with store.connection() as conn:  # nothing else queued in this database may be taken first
        await conn.execute(
            "UPDATE transcription_jobs SET status = 'FAILED' WHERE status = 'PENDING' AND id <> $1", queued.id
        )
    assert await store.claim("w", 30, 16) is None
    await store.fail(held.id, "sync:held", "done", retry=False)
    claimed = await store.claim("w", 30, 16)
    assert claimed is not None and claimed.id == queued.id
    await store.fail(claimed.id, "w", "test over", retry=False)
    ok = await client.post(
        "/api/v1/transcriptions", files={"file": ("a.wav", audio("harvard_01.wav"))}, headers=bearer(key)
    )
    assert ok.status_code == 200


async def test_daily_audio_quota(app, keys):
    client, store, _ = app
    ks = KeyStore(store)
    _, key = await ks.create("erin")
    await ks.set_limits("erin", Limits(audio_hours_per_day=0.001))  # 3.6 s
    await asyncio.sleep(TTL)
    first = await client.post(
        "/api/v1/transcriptions", files={"file": ("a.wav", audio("harvard_04.wav"))}, headers=bearer(key)
    )
    assert first.status_code == 200 and first.json()["duration"] > 3.6
    # deleting the job gives nothing back
    assert (await client.delete(f"/api/v1/transcriptions/{first.json()['id']}", headers=bearer(key))).status_code == 204
    over = await client.post(
        "/v1/audio/transcriptions",
        files={"file": ("a.wav", audio("harvard_04.wav"))},
        data={"model": "tiny.en"},
        headers=bearer(key),
    )
    assert over.status_code == 429 and over.json()["error"]["code"] == "quota_exceeded"
    assert 0 < int(over.headers["Retry-After"]) <= 86400
    assert (await client.get("/api/v1/stats", headers=bearer(key))).status_code == 200  # reads are not audio


async def test_the_bootstrap_key_is_an_admin_of_the_default_tenant(keyed_settings, catalog, backend_for, keys):
    boot = keyed_settings.model_copy(update={"api_key": "bootstrap-admin-key-for-tests"})
    store, blobs = JobStore(boot.database_url), BlobStore.from_settings(boot)
    api = create_app(TranscriptionService(boot, catalog, backend_for(boot, blobs), JobService(store, blobs)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://localhost") as client:
        listed = await client.get("/api/v1/admin/keys", headers=bearer("bootstrap-admin-key-for-tests"))
        assert listed.status_code == 200 and listed.json()["keys"]
        assert (
            await client.get("/api/v1/admin/keys", headers=bearer("bootstrap-admin-key-for-test"))
        ).status_code == 401
    await store.close()


def test_webhooks_refuse_the_example_secret():
    for weak in ("change-me", "short"):
        with pytest.raises(pydantic.ValidationError, match="STT_WEBHOOK_SECRET"):
            Settings(webhook_secret=weak)
    assert Settings().webhook_secret is None  # off by default


async def test_stt_keys_cli_works_on_the_configured_database(app, keys):
    client, *_ = app
    env = {**os.environ, "STT_DATABASE_URL": Settings(database_url=app[1].dsn).database_url, "PYTHONPATH": str(REPO)}

    def stt(*args):
        done = subprocess.run(
            [sys.executable, "-m", "cli", *args], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    made = json.loads(stt("keys", "create", "--tenant", "cli-tenant", "--role", "admin", "--expires", "1d", "--json"))
    key = made["key"]
    assert made["role"] == "admin" and made["expires_at"]
    assert (await client.get("/api/v1/admin/keys", headers=bearer(key))).status_code == 200
    listed = json.loads(stt("keys", "list", "--tenant", "cli-tenant", "--json"))
    assert [k["id"] for k in listed] == [made["id"]] and key.split("_")[2] not in json.dumps(listed)
    stt("tenants", "limits", "cli-tenant", "--max-concurrent", "7")
    limits = json.loads(stt("tenants", "limits", "cli-tenant", "--requests-per-minute", "5"))
    assert limits == {  # a second setting keeps the first
        "tenant": "cli-tenant",
        "requests_per_minute": 5,
        "max_concurrent": 7,
        "audio_hours_per_day": None,
        "max_queued": None,
        "storage_gb": None,
    }
    stt("keys", "revoke", made["id"])
    await asyncio.sleep(TTL)
    assert (await client.get("/api/v1/admin/keys", headers=bearer(key))).status_code == 401
