"""Tenants on the real application: two Ingress replicas behind HAProxy share one rate limit
through PostgreSQL, a revoked key is refused by both within seconds, and no tenant reaches
another's objects over HTTP (REST and OpenAI routes)."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from serve_app.tenancy.keys import KeyStore
from serve_app.tenancy.limits import Limits, burst
from testkit.speech import audio

REVOCATION_S = 5.0


def new_key(service, tenant: str, limits: Limits | None = None) -> str:
    async def make(store):
        keys = KeyStore(store)
        _, key = await keys.create(tenant)
        await keys.set_limits(tenant, limits or Limits(0, 0, 0))
        return key

    return service.run(make)


def replicas_seen(service, key: str, want: int = 2, path: str = "/api/v1/stats") -> set[str]:
    seen: set[str] = set()
    with service.client(key) as client:
        for _ in range(200):
            response = client.get(path)
            assert response.status_code == 200, response.text
            seen.add(response.headers["x-stt-replica"])
            if len(seen) >= want:
                break
    return seen


def test_two_ingress_replicas_share_one_rate_limit(service):
    """Over a window of W seconds a limit of N a minute lets through W * N / 60 requests and its
    burst, whichever replica each lands on (GCRA in PostgreSQL, shared by both)."""
    per_minute, window = 600, 10.0
    key = new_key(service, f"rl-{uuid.uuid4().hex[:8]}", Limits(requests_per_minute=per_minute))
    assert len(replicas_seen(service, service.key)) == 2, "the suite runs two Ingress replicas"
    results: list[tuple[float, int, str]] = []
    started = time.monotonic()

    def hammer():
        with service.client(key) as client:
            while time.monotonic() - started < window:
                response = client.get("/api/v1/stats")
                results.append((time.monotonic() - started, response.status_code, response.headers["x-stt-replica"]))
                if response.status_code == 429:
                    assert int(response.headers["Retry-After"]) >= 1 and "RateLimit-Policy" in response.headers

    with ThreadPoolExecutor(4) as pool:
        for future in [pool.submit(hammer) for _ in range(4)]:
            future.result()
    elapsed = max(r[0] for r in results)
    allowed = [r for r in results if r[1] == 200]
    refused = [r for r in results if r[1] == 429]
    assert {r[1] for r in results} == {200, 429}
    assert len({r[2] for r in allowed}) == 2, "both replicas let requests through"
    expected = elapsed * per_minute / 60 + burst(per_minute)
    print(
        f"\nrate limit {per_minute}/min over 2 replicas: {len(allowed)} let through, {len(refused)} refused "
        f"in {elapsed:.1f} s (at most {expected:.0f})"
    )
    assert len(allowed) <= expected + 1  # the one in flight at the window's edge
    assert len(allowed) >= 0.9 * expected  # and the limit is reached: no replica starves the other


def test_the_openai_sdk_backs_off_and_succeeds(service):
    key = new_key(service, f"sdk-{uuid.uuid4().hex[:8]}", Limits(requests_per_minute=60))
    sdk = openai.OpenAI(base_url=service.url + "/v1", api_key=key, timeout=60, max_retries=6)
    started = time.monotonic()
    for _ in range(burst(60) + 3):
        assert sdk.models.list().data
    assert time.monotonic() - started >= 2.0  # it had to wait, and did so by itself
    raw = sdk.models.with_raw_response.list()
    assert raw.headers["x-ratelimit-limit-requests"] == "60" and "ratelimit" in raw.headers


def test_a_revoked_key_is_refused_by_every_replica_within_5_seconds(service):
    key = new_key(service, f"rv-{uuid.uuid4().hex[:8]}")
    assert len(replicas_seen(service, key)) == 2  # both replicas have the key in their cache now

    async def revoke(store):
        await KeyStore(store).revoke(key.split("_")[1])

    service.run(revoke)  # as the CLI does: straight in the database, no replica told
    revoked_at = time.monotonic()
    last_ok = {}  # per replica: when the last request it let through was sent
    refused = set()
    with service.client(key) as client:
        while len(refused) < 2:  # until both replicas refuse (a generous deadline, not the claim)
            assert time.monotonic() - revoked_at < 120, (last_ok, refused)
            sent = time.monotonic() - revoked_at
            response = client.get("/api/v1/stats")
            if response.status_code == 200:
                last_ok[response.headers["x-stt-replica"]] = sent
            else:
                assert response.status_code == 401
                refused.add(response.headers["x-stt-replica"])
            time.sleep(0.02)
    print(f"\nlast success after revocation per replica (sent at): {last_ok or 'none'}")
    # The claim: no request sent once the cache time has passed is let through, on any replica
    # (one sent just before may be answered just after, on a loaded box).
    assert all(t < REVOCATION_S for t in last_ok.values()), last_ok


def test_no_tenant_reaches_another_tenants_objects_over_http(service):
    tenants = {name: new_key(service, f"{name}-{uuid.uuid4().hex[:6]}") for name in ("alice", "bob")}
    owned = {}
    for name, key in tenants.items():
        with service.client(key) as client:
            sync = client.post("/api/v1/transcriptions", files={"file": ("s.wav", audio("harvard_01.wav"))})
            queued = client.post(
                "/api/v1/transcriptions", files={"file": ("q.wav", audio("harvard_02.wav"))}, data={"sync": "false"}
            )
            sdk = openai.OpenAI(base_url=service.url + "/v1", api_key=key, timeout=300, max_retries=0)
            sdk.audio.transcriptions.create(file=("o.wav", audio("harvard_03.wav")), model="tiny.en")
            assert sync.status_code == 200 and queued.status_code == 202
            items = client.get("/api/v1/transcriptions").json()["items"]
            assert len(items) == 3
            owned[name] = [j["id"] for j in items]
    successes = 0
    for me, other in (("alice", "bob"), ("bob", "alice")):
        with service.client(tenants[me]) as client:
            for job_id in owned[other]:
                for method, path in (
                    ("GET", f"/api/v1/transcriptions/{job_id}"),
                    ("GET", f"/api/v1/transcriptions/{job_id}/download"),
                    ("GET", f"/api/v1/transcriptions/{job_id}/download?format=json"),
                    ("DELETE", f"/api/v1/transcriptions/{job_id}"),
                ):
                    response = client.request(method, path)
                    successes += response.status_code < 400
                    assert response.status_code == 404, (method, path, response.text)
            assert {j["id"] for j in client.get("/api/v1/transcriptions").json()["items"]} == set(owned[me])
            assert client.get(f"/api/v1/transcriptions?tenant={other}").status_code == 403
    assert successes == 0
    with service.client(tenants["alice"]) as client:  # nothing of alice's was deleted by bob
        assert {j["id"] for j in client.get("/api/v1/transcriptions").json()["items"]} == set(owned["alice"])


@pytest.mark.parametrize("path", ["/api/v1/transcriptions", "/api/v1/stats", "/v1/models", "/api/v1/admin/keys"])
def test_routes_need_a_key_and_probes_do_not(service, path):
    with service.client("stt_000000000000_" + "0" * 64) as client:
        assert client.get(path).status_code == 401
    with service.client() as client:
        assert client.get("/api/v1/admin/keys").status_code == 403  # the suite's key is not an admin
        assert client.get("/api/v1/health", headers={"Authorization": ""}).status_code == 200
