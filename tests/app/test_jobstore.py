"""JobStore against real PostgreSQL: the machine's server and the embedded one."""

from __future__ import annotations

import asyncio
import hashlib
import uuid

import pytest

from serve_app.core.errors import DatabaseUnavailable, InvalidParameter
from serve_app.jobs.store import JobStore
from tests.job_rows import new_job


@pytest.fixture(scope="module", params=["machine", "embedded"])
async def store(request, pg_dsn, tmp_path_factory):
    if request.param == "machine":
        dsn = pg_dsn
    else:
        from serve_app.jobs.database import start_embedded

        dsn = start_embedded(tmp_path_factory.mktemp("pgdata")).get_uri()
    s = JobStore(dsn, max_size=8)
    await s.migrate()
    async with s.connection() as conn:
        await conn.execute("TRUNCATE transcription_jobs CASCADE")
    yield s
    await s.close()


def new(store, **kw):
    return new_job(store, **{"user_id": "u1", "audio_key": "audio/k", "audio_bytes": 10, **kw})


async def test_migrations_are_idempotent(store):
    assert await store.migrate() == []
    async with store.connection() as conn:
        versions = [r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")]
    assert versions == [1, 2, 3, 4, 5, 6, 7]


async def test_claims_never_overlap(store):
    created = [await new(store) for _ in range(12)]
    owners = [f"w{i}" for i in range(6)]

    async def drain(owner):
        got = []
        while (job := await store.claim(owner, 30)) is not None:
            got.append(job.id)
        return got

    claimed = await asyncio.gather(*(drain(o) for o in owners))
    flat = [j for jobs in claimed for j in jobs]
    assert sorted(flat) == sorted(j.id for j in created)  # every job once, none twice
    for owner, jobs in zip(owners, claimed):
        for job_id in jobs:
            done = await store.complete(
                job_id, owner, result_key="r", duration=1.0, preview="hi", language="en", processing_seconds=0.1
            )
            assert done.status == "COMPLETED"
            # A worker that does not hold the lease cannot write.
            assert (
                await store.complete(
                    job_id, "intruder", result_key="x", duration=1, preview="", language=None, processing_seconds=0
                )
                is None
            )


async def test_expired_lease_is_reclaimed_then_fails_after_max_attempts(store):
    job = await new(store, max_attempts=2)
    first = await store.claim("dead-worker", 0.05)
    assert first.id == job.id and first.attempts == 1
    await asyncio.sleep(0.1)
    assert (job.id, "PENDING") in await store.expire_leases()
    assert not await store.renew(job.id, "dead-worker", 30)  # the dead worker lost it
    second = await store.claim("live-worker", 0.05)
    assert second.id == job.id and second.attempts == 2
    await asyncio.sleep(0.1)
    assert (job.id, "FAILED") in await store.expire_leases()
    failed = await store.get(job.id)
    assert failed.status == "FAILED" and "lease" in failed.error


async def test_retryable_failure_goes_back_to_queue(store):
    job = await new(store, max_attempts=2)
    claimed = await store.claim("w", 30)
    assert claimed.id == job.id
    again = await store.fail(job.id, "w", "boom", retry=True)
    assert again.status == "PENDING"
    await store.claim("w", 30)
    final = await store.fail(job.id, "w", "boom again", retry=True)
    assert final.status == "FAILED" and final.error == "boom again"


async def test_list_filters_search_and_pages(store):
    user = f"lister-{uuid.uuid4().hex[:6]}"
    names = [f"interview {i}.wav" for i in range(7)] + ["podcast episode.mp3"]
    for name in names:
        await new(store, user_id=user, filename=name)
    seen, cursor = [], None
    while True:
        page, cursor = await store.list(user, limit=3, cursor=cursor)
        seen += page
        if cursor is None:
            break
    assert len(seen) == 8 and len({j.id for j in seen}) == 8
    assert [j.created_at for j in seen] == sorted((j.created_at for j in seen), reverse=True)
    found, _ = await store.list(user, search="podcast")
    assert [j.original_filename for j in found] == ["podcast episode.mp3"]
    pending, _ = await store.list(user, status="PENDING")
    assert len(pending) == 8
    assert (await store.list(user, status="COMPLETED"))[0] == []
    with pytest.raises(InvalidParameter):
        await store.list(user, cursor="not-a-cursor")


async def test_stats_count_the_last_day(store):
    before = await store.stats("stats")
    done = [await new(store, user_id="stats", sync_owner="sync:s") for _ in range(3)]
    for job in done[:2]:
        await store.complete(
            job.id, "sync:s", result_key="r", duration=10.0, preview="hi", language="en", processing_seconds=2.0
        )
    await store.fail(done[2].id, "sync:s", "broken", retry=False)
    await new(store, user_id="stats")  # still PENDING
    after = await store.stats("stats")
    assert after["last_24h"]["completed"] - before["last_24h"]["completed"] == 2
    assert after["last_24h"]["failed"] - before["last_24h"]["failed"] == 1
    assert after["queue_depth"] - before["queue_depth"] == 1
    assert after["last_24h"]["audio_seconds"] - before["last_24h"]["audio_seconds"] == pytest.approx(20.0)


async def test_queries_use_the_seed_indexes(store):
    """With enough rows and sequential scans discouraged, the planner picks the seed's indexes."""
    async with store.connection() as conn:
        await conn.execute(
            """INSERT INTO transcription_jobs (id, user_id, original_filename, status, model, task)
               SELECT gen_random_uuid(), 'bulk', 'meeting ' || md5(g::text) || ' wav',
                      (ARRAY['PENDING','PROCESSING','COMPLETED','FAILED'])[1 + g % 4], 'tiny.en', 'transcribe'
               FROM generate_series(1, 5000) g"""
        )
        await conn.execute("ANALYZE transcription_jobs")
        await conn.execute("SET enable_seqscan = off")
        plans = {}
        for name, (sql, args) in {
            "list": store.list_query("bulk", status=None, search=None, cursor=None, limit=20),
            "list_status": store.list_query("bulk", status="FAILED", search=None, cursor=None, limit=20),
            "search": store.list_query(
                "bulk", status=None, search=hashlib.md5(b"7").hexdigest(), cursor=None, limit=20
            ),
        }.items():
            plans[name] = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + sql, *args))
        from serve_app.jobs import queries

        plans["stats"] = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + queries.STATS, "bulk"))
        plans["active"] = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + queries.ACTIVE, None))
        plans["claim"] = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + queries.CLAIM, "w", 1.0, 16, 24.0))
        await conn.execute("DELETE FROM transcription_jobs WHERE user_id LIKE 'bulk%'")
    seed = (
        "idx_jobs_user_status_created",
        "idx_jobs_created_at",
        "idx_jobs_user_id",
        "idx_jobs_failed",
        "idx_jobs_active_status",
        "idx_jobs_filename_fts",
        "idx_jobs_user_active",  # 007: a tenant's queued and running jobs (admission)
    )
    for name, plan in plans.items():
        assert any(index in plan for index in seed), (name, plan)
    assert "idx_jobs_filename_fts" in plans["search"]
    assert "idx_jobs_active_status" in plans["active"] or "idx_jobs_user_active" in plans["active"]


async def test_database_down_is_a_503_error():
    store = JobStore("postgresql://postgres@127.0.0.1:1/none")
    with pytest.raises(DatabaseUnavailable) as err:
        await store.get(uuid.uuid4())
    assert err.value.status_code == 503
