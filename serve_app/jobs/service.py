"""Jobs with their blobs: accept (store audio, then commit the row), record, complete, read, delete."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass

from serve_app.core.metrics import METRICS
from serve_app.core.results import TranscriptionResult
from serve_app.jobs import queries
from serve_app.jobs.admission import Quotas, admit, inspect_stored
from serve_app.jobs.blobs import BlobNotFound, BlobStore
from serve_app.jobs.store import Job, JobStore

SYNC_OWNER = "sync:"  # lease owner of a job run by the request that made it (not a JobWorker)


def audio_key(tenant: str, job_id: uuid.UUID, filename: str) -> str:
    """Blob keys carry the tenant (a checked name): a storage listing never mixes tenants."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", filename or "audio")[-100:].lstrip(".") or "audio"
    return f"audio/{tenant}/{job_id}/{safe}"


def result_key(tenant: str, job_id: uuid.UUID) -> str:
    return f"results/{tenant}/{job_id}.json"


@dataclass(frozen=True)
class JobSpec:
    """What a job row records of its request, once checked (``Resolved.job_spec()``): enough to
    run it again from the row alone (``Resolved.of_job``)."""

    model: str  # a served model, or "auto"
    language: str | None
    task: str
    options: dict  # the decode, prepare and diarize options, as JSON


class JobService:
    """A JobStore (rows) and a BlobStore (audio, results) kept consistent with each other."""

    def __init__(self, store: JobStore, blobs: BlobStore, *, max_attempts: int = 3):
        self.store = store
        self.blobs = blobs
        self.max_attempts = max_attempts

    async def submit(
        self,
        *,
        user_id: str,
        filename: str,
        blocks: AsyncIterator[bytes],
        spec: JobSpec,
        webhook_url: str | None,
        request_id: str | None = None,
        quotas: Quotas | None = None,
        max_seconds: float | None = None,
    ) -> Job:
        """Store the audio first, check that it is audio, then commit the job within the
        tenant's ``quotas``: a 202 means both are durable; anything refused keeps nothing."""
        job_id = uuid.uuid4()
        key = audio_key(user_id, job_id, filename)
        await self.precheck(user_id, quotas, jobs=1)  # a tenant at its limits uploads nothing
        try:
            size = await self.blobs.put_stream(key, blocks)
            found = await inspect_stored(self.blobs, key, max_seconds=max_seconds)
            return await self.store.create(
                job_id=job_id,
                user_id=user_id,
                filename=filename,
                **asdict(spec),
                audio_key=key,
                audio_bytes=size,
                webhook_url=webhook_url,
                max_attempts=self.max_attempts,
                request_id=request_id,
                reserved_seconds=found.seconds,
                audio_type=found.media_type,
                quotas=quotas or Quotas(),
            )
        except BaseException:
            await self.blobs.delete(key)  # no orphan audio for a job that was never committed
            raise

    async def record_sync(
        self,
        *,
        user_id: str,
        filename: str,
        audio_bytes: int,
        spec: JobSpec,
        owner: str,
        lease_seconds: float,
        max_concurrent: int = 0,
        request_id: str | None = None,
    ) -> Job:
        """The row of a transcription that runs now, held by ``owner`` (who renews the lease of
        ``lease_seconds`` while it runs) until it ends; refused (RateLimited) when the tenant
        already runs ``max_concurrent`` jobs."""
        return await self.store.create(
            user_id=user_id,
            filename=filename,
            **asdict(spec),
            audio_bytes=audio_bytes,
            sync_owner=owner,
            sync_lease_s=lease_seconds,
            max_concurrent=max_concurrent,
            request_id=request_id,
        )

    async def complete(self, job: Job, owner: str, result: TranscriptionResult) -> Job | None:
        """Store the result, then mark the job COMPLETED (fenced by ``owner``'s lease).

        None when ``owner`` no longer holds the job (the reaper took it, or it was deleted).
        """
        key = result_key(job.user_id, job.id)
        body = result.model_dump_json().encode()
        await self.blobs.put_bytes(key, body)
        done = await self.store.complete(
            job.id,
            owner,
            result_key=key,
            duration=result.duration,
            preview=result.text,
            language=result.language,
            processing_seconds=result.processing_time,
            model=result.model,
            result_bytes=len(body),
        )
        if done is None:
            # Unless a worker that took the job over completed it with this same key, the
            # result is nobody's now: a failed or deleted job keeps no orphaned result.
            current = await self.store.get(job.id)
            if current is None or current.status != "COMPLETED" or current.result_key != key:
                await self.blobs.delete(key)
            return None
        kind = "sync" if owner.startswith(SYNC_OWNER) else "async"
        METRICS.transcribed(result.model, kind, result.duration, result.processing_time)
        METRICS.job_finished("COMPLETED")
        return done

    async def precheck(self, tenant: str, quotas: Quotas | None, *, jobs: int) -> None:
        """Refuse (RateLimited) before any upload is stored when ``jobs`` more cannot fit."""
        if quotas is not None:
            async with self.store.connection() as conn:
                await admit(conn, tenant, quotas, jobs=jobs, seconds=0.0, size=0)

    async def fail(self, job: Job, owner: str, reason: str, *, retry: bool) -> Job | None:
        """Fail (or requeue) a job. One that failed for its input's fault (not ``retry``: it
        is not audio after all) keeps no audio; one that failed for the service's (a store down
        through every attempt) keeps its upload for a retry by hand, until retention."""
        failed = await self.store.fail(job.id, owner, reason, retry=retry)
        if failed is not None:
            METRICS.job_finished("FAILED" if failed.status == "FAILED" else "RETRIED")
            if failed.status == "FAILED" and not retry and failed.audio_key:
                await self.drop_audio(failed)
        return failed

    async def expire(self, days: float, *, results: bool = False, limit: int = 500) -> int:
        """Retention: delete the audio of jobs finished more than ``days`` ago (with
        ``results``, the whole job); at most ``limit`` at a time. How many were touched."""
        async with self.store.connection() as conn:
            rows = await conn.fetch(queries.EXPIRED, float(days), results, limit)
        for job in map(Job.from_row, rows):
            if results:
                await self.delete(job.id, job.user_id)
            else:
                await self.drop_audio(job)
        return len(rows)

    async def drop_audio(self, job: Job) -> None:
        """Delete a job's stored audio (it failed, or its retention ran out); the row says so."""
        await self.blobs.delete(job.audio_key)
        await self.store.forget_audio(job.id, job.audio_key)

    async def result(self, job: Job) -> TranscriptionResult | None:
        if job.status != "COMPLETED" or not job.result_key:
            return None
        try:
            return TranscriptionResult.model_validate_json(await self.blobs.get_bytes(job.result_key))
        except BlobNotFound:
            return None

    async def delete(self, job_id: uuid.UUID, user_id: str) -> Job | None:
        job = await self.store.delete(job_id, user_id)
        if job:
            for key in (job.audio_key, job.result_key):
                if key:
                    await self.blobs.delete(key)
        return job
