"""JobStore: transcription jobs in PostgreSQL through asyncpg (their SQL: serve_app/jobs/queries.py).

Jobs are claimed with ``FOR UPDATE SKIP LOCKED`` and held under a lease that the worker
renews; a worker that dies stops renewing, its lease expires, and another worker reclaims the
job. Every state change that must not half-happen is one statement or one transaction, and
writes by a worker are fenced by its lease (``lease_owner``): a worker that lost its lease
cannot overwrite the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any

import asyncpg

from serve_app.core.errors import DatabaseUnavailable, RateLimited
from serve_app.core.metrics import METRICS
from serve_app.jobs import queries
from serve_app.jobs.admission import Quotas, admit
from serve_app.jobs.cursors import decode_cursor, encode_cursor

NOTIFY_CHANNEL = "stt_jobs"


# Errors that mean "the database is not there right now", as opposed to a bug in our SQL.
_UNAVAILABLE = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
)


@dataclass
class Job:
    id: uuid.UUID
    user_id: str
    original_filename: str
    status: str
    model: str
    language: str | None
    task: str
    options: dict
    is_sync: bool
    duration_seconds: float | None
    audio_key: str | None
    audio_bytes: int | None
    result_key: str | None
    text_preview: str | None
    error: str | None
    attempts: int
    max_attempts: int
    lease_owner: str | None
    lease_expires_at: datetime | None
    progress: float
    webhook_url: str | None
    processing_seconds: float | None
    started_at: datetime | None
    completed_at: datetime | None
    created_at: datetime
    updated_at: datetime
    request_id: str | None = None
    batch_id: uuid.UUID | None = None
    reserved_seconds: float = 0.0
    audio_type: str | None = None
    result_bytes: int | None = None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Job:
        data = dict(row)
        if isinstance(data.get("options"), str):
            data["options"] = json.loads(data["options"])
        return cls(**data)


# -- SQL ---------------------------------------------------------------------------------------
class JobStore:
    def __init__(self, dsn: str, *, min_size: int = 1, max_size: int = 10, auto_migrate: bool = True):
        self.dsn = dsn
        self.min_size, self.max_size = min_size, max_size
        # Migrate when the pool is first made, so a service that starts while the database is
        # down answers 503 and then sets itself up once the database is back.
        self.auto_migrate = auto_migrate
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()

    # -- connection ----------------------------------------------------------------------------
    async def _get_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            async with self._pool_lock:
                if self._pool is None:
                    pool = await asyncpg.create_pool(
                        self.dsn,
                        min_size=self.min_size,
                        max_size=self.max_size,
                        timeout=5,
                        command_timeout=30,
                    )
                    if self.auto_migrate:
                        try:
                            async with pool.acquire() as conn:
                                await self._migrate(conn)
                        except BaseException:
                            await pool.close()
                            raise
                    self._pool = pool
        return self._pool

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection; 'database down' becomes DatabaseUnavailable (503)."""
        try:
            pool = await self._get_pool()
            async with pool.acquire(timeout=10) as conn:
                yield conn
        except _UNAVAILABLE as exc:
            METRICS.database_error("unavailable")
            raise DatabaseUnavailable(
                f"The job database is unavailable ({type(exc).__name__}); retry shortly."
            ) from exc
        except asyncpg.PostgresError as exc:
            METRICS.database_error(type(exc).__name__)  # a bounded set: asyncpg's error classes
            raise

    async def ping(self) -> bool:
        try:
            async with self.connection() as conn:
                await conn.fetchval("SELECT 1")
            return True
        except DatabaseUnavailable:
            return False

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def migrate(self) -> list[int]:
        """Apply serve_app/migrations/NNN_name.sql not applied yet, in order, each atomically."""
        async with self.connection() as conn:
            return await self._migrate(conn)

    async def _migrate(self, conn: asyncpg.Connection) -> list[int]:
        files = sorted(
            (int(f.name.split("_", 1)[0]), f.name, f.read_text())
            for f in resources.files("serve_app.jobs.migrations").iterdir()
            if f.name.endswith(".sql")
        )
        applied_now = []
        async with conn.transaction():
            await conn.execute(queries.MIGRATION_LOCK)  # replicas starting together take turns
            await conn.execute(queries.MIGRATIONS_TABLE)
            done = {r["version"] for r in await conn.fetch(queries.APPLIED)}
            for version, name, sql in files:
                if version not in done:
                    await conn.execute(sql)
                    await conn.execute(queries.RECORD_MIGRATION, version, name)
                    applied_now.append(version)
        return applied_now

    # -- API side ------------------------------------------------------------------------------
    async def create(
        self,
        *,
        user_id: str,
        filename: str,
        model: str,
        language: str | None,
        task: str,
        options: dict,
        audio_key: str | None = None,
        audio_bytes: int | None = None,
        webhook_url: str | None = None,
        max_attempts: int = 3,
        sync_owner: str | None = None,
        sync_lease_s: float = 30.0,
        job_id: uuid.UUID | None = None,
        max_concurrent: int = 0,
        request_id: str | None = None,
        reserved_seconds: float = 0.0,
        audio_type: str | None = None,
        quotas: Quotas | None = None,
    ) -> Job:
        """Insert a job and commit. Async jobs wake the workers (NOTIFY, in the same commit),
        admitted within the tenant's ``quotas`` (reserving ``reserved_seconds``); sync jobs
        start PROCESSING, leased to the request that runs them, unless the tenant already runs
        ``max_concurrent`` jobs (0: no limit): then RateLimited."""
        status = "PROCESSING" if sync_owner else "PENDING"
        async with self.connection() as conn, conn.transaction():
            if quotas is not None:
                await admit(conn, user_id, quotas, jobs=1, seconds=reserved_seconds, size=audio_bytes or 0)
            if sync_owner and max_concurrent:
                await conn.execute(queries.TENANT_LOCK, user_id)
                running = await conn.fetchval(queries.RUNNING, user_id)
                if running >= max_concurrent:
                    raise RateLimited(
                        f"Tenant '{user_id}' already runs {running} transcriptions, its limit; "
                        "retry when one has finished.",
                        retry_after=1.0,
                        code="too_many_concurrent",
                    )
            row = await conn.fetchrow(
                queries.INSERT,
                job_id or uuid.uuid4(),
                user_id,
                filename,
                status,
                model,
                language,
                task,
                json.dumps(options),
                sync_owner is not None,
                audio_key,
                audio_bytes,
                max_attempts,
                webhook_url,
                sync_owner,
                float(sync_lease_s),
                request_id,
                float(reserved_seconds),
                audio_type,
            )
            if status == "PENDING":
                await conn.execute(queries.NOTIFY, NOTIFY_CHANNEL, str(row["id"]))
        return Job.from_row(row)

    async def get(self, job_id: uuid.UUID, user_id: str | None = None) -> Job | None:
        async with self.connection() as conn:
            if user_id is None:
                row = await conn.fetchrow(queries.GET_ANY, job_id)
            else:
                row = await conn.fetchrow(queries.GET, job_id, user_id)
        return Job.from_row(row) if row else None

    def list_query(
        self, user_id: str, *, status: str | None, search: str | None, cursor: str | None, limit: int
    ) -> tuple[str, list[Any]]:
        sql, args = queries.LIST_HEAD, [user_id]
        if status:
            args.append(status)
            sql += queries.LIST_STATUS.format(len(args))
        if search:
            args.append(search)
            sql += queries.LIST_SEARCH.format(len(args))
        if cursor:
            stamp, ident = decode_cursor(cursor)
            args += [stamp, ident]
            sql += queries.LIST_CURSOR.format(len(args) - 1, len(args))
        args.append(limit + 1)
        sql += queries.LIST_TAIL.format(len(args))
        return sql, args

    async def list(
        self,
        user_id: str,
        *,
        status: str | None = None,
        search: str | None = None,
        cursor: str | None = None,
        limit: int = 20,
    ) -> tuple[list[Job], str | None]:
        """Newest first; returns a page and the cursor of the next page (None at the end)."""
        sql, args = self.list_query(user_id, status=status, search=search, cursor=cursor, limit=limit)
        async with self.connection() as conn:
            rows = await conn.fetch(sql, *args)
        jobs = [Job.from_row(r) for r in rows[:limit]]
        return jobs, (encode_cursor(jobs[-1]) if len(rows) > limit else None)

    async def delete(self, job_id: uuid.UUID, user_id: str) -> Job | None:
        async with self.connection() as conn:
            row = await conn.fetchrow(queries.DELETE, job_id, user_id)
        return Job.from_row(row) if row else None

    async def stats(self, tenant: str | None = None) -> dict:
        """A tenant's dashboard; with no tenant, only what is queued and running in all (cheap)."""
        async with self.connection() as conn:
            active = {r["status"]: r["n"] for r in await conn.fetch(queries.ACTIVE, tenant)}
            if tenant is None:
                return {"processing": active.get("PROCESSING", 0), "queue_depth": active.get("PENDING", 0)}
            day = await conn.fetchrow(queries.STATS, tenant)
        return {
            "last_24h": {
                "completed": day["completed"],
                "failed": day["failed"],
                "audio_seconds": round(day["audio_seconds"] or 0.0, 2),
                "avg_processing_seconds": round(day["avg_processing_seconds"] or 0.0, 3),
            },
            "processing": active.get("PROCESSING", 0),
            "queue_depth": active.get("PENDING", 0),
        }

    # -- worker side ---------------------------------------------------------------------------
    async def expire_leases(self) -> list[tuple[uuid.UUID, str]]:
        async with self.connection() as conn:
            return [(r["id"], r["status"]) for r in await conn.fetch(queries.EXPIRE_LEASES)]

    async def claim(
        self, owner: str, lease_s: float, max_concurrent: int = 0, audio_hours_per_day: float = 0.0
    ) -> Job | None:
        """A PENDING job, tenants in turn: see queries.CLAIM (``max_concurrent`` and
        ``audio_hours_per_day`` where the tenant sets none; 0: no limit)."""
        async with self.connection() as conn:
            row = await conn.fetchrow(queries.CLAIM, owner, float(lease_s), max_concurrent, float(audio_hours_per_day))
        return Job.from_row(row) if row else None

    async def renew(self, job_id: uuid.UUID, owner: str, lease_s: float, progress: float | None = None) -> bool:
        async with self.connection() as conn:
            status = await conn.execute(queries.RENEW, job_id, owner, float(lease_s), progress)
        return status.endswith(" 1")

    async def release(self, job_id: uuid.UUID, owner: str) -> bool:
        """Give a running job back to the queue (a worker stopping), its attempt not counted."""
        async with self.connection() as conn:
            return await conn.fetchval(queries.RELEASE, job_id, owner, NOTIFY_CHANNEL) is not None

    async def complete(
        self,
        job_id: uuid.UUID,
        owner: str,
        *,
        result_key: str,
        duration: float,
        preview: str,
        language: str | None,
        processing_seconds: float,
        model: str | None = None,
        result_bytes: int | None = None,
    ) -> Job | None:
        """Mark done, fenced by the lease; None when this owner no longer holds the job.
        ``model``: the one that ran it, when the job asked for ``auto``."""
        async with self.connection() as conn:
            row = await conn.fetchrow(
                queries.COMPLETE,
                job_id,
                owner,
                result_key,
                duration,
                preview[:500],
                language,
                processing_seconds,
                model,
                result_bytes,
            )
        return Job.from_row(row) if row else None

    async def fail(self, job_id: uuid.UUID, owner: str, error: str, *, retry: bool) -> Job | None:
        async with self.connection() as conn:
            row = await conn.fetchrow(queries.FAIL, job_id, owner, error[:2000], retry)
        return Job.from_row(row) if row else None

    async def record_delivery(
        self,
        job_id: uuid.UUID,
        url: str,
        event: str,
        attempt: int,
        status_code: int | None,
        error: str | None,
        delivered: bool,
    ) -> None:
        async with self.connection() as conn:
            await conn.execute(queries.RECORD_DELIVERY, job_id, url, event, attempt, status_code, error, delivered)

    async def forget_audio(self, job_id: uuid.UUID, key: str) -> None:
        async with self.connection() as conn:
            await conn.execute(queries.FORGET_AUDIO, job_id, key)

    async def deliveries(self, job_id: uuid.UUID) -> list[dict]:
        async with self.connection() as conn:
            return [dict(r) for r in await conn.fetch(queries.DELIVERIES, job_id)]

    async def listen(self, on_job) -> asyncpg.Connection:
        """A dedicated connection that calls ``on_job(job_id)`` on every NOTIFY."""
        conn = await asyncpg.connect(self.dsn, timeout=5)
        await conn.add_listener(NOTIFY_CHANNEL, lambda *args: on_job(args[-1]))
        return conn
