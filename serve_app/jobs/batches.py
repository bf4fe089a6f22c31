"""Batches: many files as one unit. Each file is an async job of the batch; the batch's status
comes from its jobs' (COMPLETED once every file is, FAILED when every file failed, PARTIAL for
a mix), it downloads as one zip, and one webhook announces its end.

Files come as uploads (stored as they are read) or as keys of objects already in the BlobStore
under the tenant's inbox (``inbox/<tenant>/...``, copied, so deleting the batch never deletes the
tenant's own objects). The jobs are queued longest first, so that workers start the long files
first and the short ones fill the Transcribers' batches beside them.
"""

from __future__ import annotations

import asyncio
import json
import re
import unicodedata
import uuid
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass

from serve_app.audio.inspect import Inspection
from serve_app.audio.uploads import AudioUpload, clean_filename
from serve_app.core.errors import InvalidParameter, ServiceError
from serve_app.core.formats import EXTENSIONS, RENDERERS
from serve_app.jobs import queries
from serve_app.jobs.admission import Quotas, admit, inspect_stored
from serve_app.jobs.blobs import BlobNotFound
from serve_app.jobs.service import JobService, JobSpec, audio_key
from serve_app.jobs.store import NOTIFY_CHANNEL, Job, JobStore

ACTIVE = ("PENDING", "PROCESSING")
STORE_AT_ONCE = 8  # a batch's files written to the BlobStore at once


class BatchNotFound(ServiceError):
    status_code = 404
    code = "batch_not_found"


@dataclass
class BatchTarget:
    """What a webhook delivery needs of the batch it announces."""

    id: uuid.UUID
    user_id: str
    webhook_url: str | None
    request_id: str | None


class BatchDeliveries:
    """Where a batch webhook's attempts are recorded (webhook_deliveries, by batch)."""

    def __init__(self, store: JobStore):
        self.store = store

    async def record_delivery(self, batch_id, url, event, attempt, status_code, error, delivered) -> None:
        async with self.store.connection() as conn:
            await conn.execute(
                queries.RECORD_BATCH_DELIVERY, batch_id, url, event, attempt, status_code, error, delivered
            )


def batch_status(statuses: list[str]) -> str:
    if any(s in ACTIVE for s in statuses):
        return "PENDING" if all(s == "PENDING" for s in statuses) else "PROCESSING"
    if all(s == "COMPLETED" for s in statuses):
        return "COMPLETED"
    return "FAILED" if all(s == "FAILED" for s in statuses) else "PARTIAL"


def inbox_prefix(tenant: str) -> str:
    return f"inbox/{tenant}/"


class BatchService:
    def __init__(self, jobs: JobService, *, max_files: int, quotas: Quotas | None = None, max_seconds=None):
        self.jobs, self.store, self.blobs = jobs, jobs.store, jobs.blobs
        self.max_files = max_files
        self.quotas = quotas or Quotas()  # the submitting tenant's (see serve_app/jobs/admission.py)
        self.max_seconds = max_seconds

    # -- submitting ----------------------------------------------------------------------------
    def _check_count(self, count: int) -> None:
        if count == 0:
            raise InvalidParameter("A batch needs at least one file (files) or object key (keys).", param="files")
        if count > self.max_files:
            raise InvalidParameter(
                f"A batch holds at most {self.max_files} files; this one has {count}.", param="files"
            )

    async def submit_uploads(self, tenant: str, uploads: list[AudioUpload], spec: JobSpec, **extra) -> dict:
        self._check_count(len(uploads))
        await self.jobs.precheck(tenant, self.quotas, jobs=len(uploads))  # before anything is stored
        stored: list[tuple[uuid.UUID, str, str, int]] = []
        storing = asyncio.Semaphore(STORE_AT_ONCE)

        async def store(n: int, upload: AudioUpload) -> None:
            job_id, name = stored[n][0], upload.filename
            async with storing:
                size = await self.blobs.put_stream(stored[n][2], upload.blocks())
            stored[n] = (job_id, name, stored[n][2], size)

        try:
            for upload in uploads:
                job_id = uuid.uuid4()
                stored.append((job_id, upload.filename, audio_key(tenant, job_id, upload.filename), 0))
            # Every write ends (or fails) before any cleanup below runs: no blob written after it.
            outcomes = await asyncio.gather(*(store(n, u) for n, u in enumerate(uploads)), return_exceptions=True)
            failed = next((o for o in outcomes if isinstance(o, BaseException)), None)
            if failed is not None:
                raise failed
            return await self._commit(tenant, stored, spec, **extra)
        except BaseException:
            await asyncio.gather(*(self.blobs.delete(key) for _, _, key, _ in stored), return_exceptions=True)
            raise

    async def submit_keys(self, tenant: str, keys: list[str], spec: JobSpec, **extra) -> dict:
        self._check_count(len(keys))
        await self.jobs.precheck(tenant, self.quotas, jobs=len(keys))
        prefix = inbox_prefix(tenant)
        for key in keys:
            if not key.startswith(prefix) or ".." in key.split("/") or not key.isprintable() or len(key) > 1024:
                raise InvalidParameter(
                    f"Object keys must name objects under '{prefix}' (not '{key[:100]}').", param="keys"
                )
        stored: list[tuple[uuid.UUID, str, str, int]] = []
        try:
            for key in keys:
                job_id, name = uuid.uuid4(), clean_filename(key.rsplit("/", 1)[-1])
                target = audio_key(tenant, job_id, name)
                try:
                    size = await self.blobs.size(key)
                    await self.blobs.copy(key, target)
                except BlobNotFound:
                    raise InvalidParameter(
                        f"No object '{key}' in the store.", code="object_not_found", param="keys"
                    ) from None
                stored.append((job_id, name, target, size))
            return await self._commit(tenant, stored, spec, **extra)
        except BaseException:
            await asyncio.gather(*(self.blobs.delete(key) for _, _, key, _ in stored), return_exceptions=True)
            raise

    async def _inspect(self, key: str) -> Inspection | ServiceError:
        """What a stored file is; the refusal, for one that is not audio."""
        try:
            return await inspect_stored(self.blobs, key, max_seconds=self.max_seconds)
        except ServiceError as exc:
            return exc

    async def _commit(self, tenant, stored, spec: JobSpec, *, webhook_url=None, request_id=None) -> dict:
        found = await asyncio.gather(*(self._inspect(key) for _, _, key, _ in stored))
        refused = [i for i, f in enumerate(found) if isinstance(f, ServiceError)]
        if len(refused) == len(stored):
            first = found[0]
            raise type(first)(f"No file of the batch is audio; '{stored[0][1]}': {first.message}", code=first.code)
        # A file that is not audio is a FAILED job of the batch (it shows in the batch's report);
        # its bytes are deleted now, never kept.
        await asyncio.gather(*(self.blobs.delete(stored[i][2]) for i in refused))
        seconds = [0.0 if i in refused else found[i].seconds for i in range(len(stored))]
        order = sorted(range(len(stored)), key=lambda i: -seconds[i])  # longest first
        place = {i: rank for rank, i in enumerate(order)}
        good = [i for i in range(len(stored)) if i not in refused]
        batch_id = uuid.uuid4()
        async with self.store.connection() as conn, conn.transaction():
            await admit(
                conn,
                tenant,
                self.quotas,
                jobs=len(good),
                seconds=sum(seconds),
                size=sum(stored[i][3] for i in good),
            )
            batch = await conn.fetchrow(queries.INSERT_BATCH, batch_id, tenant, len(stored), webhook_url, request_id)
            await conn.execute(
                queries.INSERT_JOBS,
                batch_id,
                tenant,
                spec.model,
                spec.language,
                spec.task,
                json.dumps(spec.options),
                self.jobs.max_attempts,
                request_id,
                [s[0] for s in stored],
                [s[1] for s in stored],
                [None if i in refused else s[2] for i, s in enumerate(stored)],
                [s[3] for s in stored],
                [place[i] for i in range(len(stored))],
                seconds,
                [None if i in refused else found[i].media_type for i in range(len(stored))],
                [f"not audio: {found[i].message}" if i in refused else None for i in range(len(stored))],
            )
            await conn.execute(queries.NOTIFY, NOTIFY_CHANNEL, str(batch_id))  # wake the workers
        return {"id": str(batch["id"]), "files": [{"id": str(s[0]), "filename": s[1]} for s in stored]}

    # -- reading -------------------------------------------------------------------------------
    async def get(self, batch_id: str, tenant: str | None) -> tuple[dict, list[Job]]:
        """The batch (``tenant`` None: any tenant's, for admins) and its jobs; another tenant's is 404."""
        try:
            ident = uuid.UUID(batch_id)
        except ValueError:
            raise BatchNotFound(f"No batch '{batch_id}'.") from None
        async with self.store.connection() as conn:
            row = await conn.fetchrow(queries.GET_BATCH, ident, tenant)
            if row is None:
                raise BatchNotFound(f"No batch '{batch_id}'.")
            jobs = [Job.from_row(r) for r in await conn.fetch(queries.BATCH_JOBS, ident)]
        return dict(row), jobs

    @staticmethod
    def view(row: dict, jobs: list[Job]) -> dict:
        statuses = [j.status for j in jobs]
        done = [j for j in jobs if j.status == "COMPLETED"]
        return {
            "id": str(row["id"]),
            "status": batch_status(statuses) if jobs else "FAILED",
            "created_at": row["created_at"].isoformat(),
            "ended_at": row["ended_at"].isoformat() if row["ended_at"] else None,
            "aggregate": {
                "files": len(jobs),
                **{s.lower(): statuses.count(s) for s in ("PENDING", "PROCESSING", "COMPLETED", "FAILED")},
                "progress": round(sum(j.progress for j in jobs) / len(jobs), 4) if jobs else 0.0,
                "audio_seconds": round(sum(j.duration_seconds or 0 for j in done), 3),
                "processing_seconds": round(sum(j.processing_seconds or 0 for j in done), 3),
            },
            "files": [
                {
                    "id": str(j.id),
                    "filename": j.original_filename,
                    "status": j.status,
                    "progress": j.progress,
                    "model": j.model,
                    "duration": j.duration_seconds,
                    "text_preview": j.text_preview,
                    "error": j.error,
                }
                for j in jobs
            ],
        }

    async def zip(self, jobs: list[Job], fmt: str) -> AsyncIterator[bytes]:
        """Every finished transcript in ``fmt``, one file each (named after its audio, made
        safe: no folders, no drive, no control characters, no clash), the files that failed
        listed in ERRORS.txt; streamed entry by entry, never held whole."""
        ext, sink = EXTENSIONS[fmt], _Sink()
        archive = zipfile.ZipFile(sink, "w", zipfile.ZIP_DEFLATED)
        taken, errors = {ERRORS_NAME.lower()}, []
        for job in jobs:
            result = await self.jobs.result(job)
            if result is None:
                errors.append("\t".join(_one_line(v) for v in (job.original_filename, job.status, job.error or "")))
                continue
            name = _unique(entry_name(job.original_filename, ext), taken)
            body = result.model_dump_json(indent=2) if fmt == "json" else RENDERERS[fmt](result.segments)
            await asyncio.to_thread(archive.writestr, name, body)
            if sink.chunks:
                yield sink.take()
        if errors:
            archive.writestr(ERRORS_NAME, "\n".join(errors) + "\n")
        archive.close()
        yield sink.take()

    async def delete(self, batch_id: str, tenant: str) -> None:
        row, jobs = await self.get(batch_id, tenant)
        for job in jobs:
            await self.jobs.delete(job.id, job.user_id)
        async with self.store.connection() as conn:
            await conn.execute(queries.DELETE_BATCH, row["id"], row["user_id"])


async def end_batch(store: JobStore, batch_id: uuid.UUID) -> tuple[BatchTarget, dict] | None:
    """Mark the batch ended if its last job just finished: the webhook's target and summary
    for the one caller that did, None for everyone else."""
    async with store.connection() as conn:
        row = await conn.fetchrow(queries.END_BATCH, batch_id)
        if row is None:
            return None
        statuses = [r["status"] for r in await conn.fetch(queries.BATCH_JOBS, batch_id)]
    summary = {
        "status": batch_status(statuses),
        "files": len(statuses),
        "completed": statuses.count("COMPLETED"),
        "failed": statuses.count("FAILED"),
    }
    return BatchTarget(row["id"], row["user_id"], row["webhook_url"], row["request_id"]), summary


ERRORS_NAME = "ERRORS.txt"
_UNSAFE = re.compile(r'[\\/:*?"<>|\x00-\x1f\x7f]')


def entry_name(filename: str, ext: str) -> str:
    """A zip entry name from a client's file name: one plain name in the zip's top folder
    (``..\\..\\x.wav`` is ``_.._x.txt``, never a path out of where it is unpacked)."""
    stem = re.sub(r"\.[A-Za-z0-9]{1,5}$", "", _UNSAFE.sub("_", filename))  # the audio's extension
    stem = stem.strip(" .")[:200] or "transcript"
    return f"{stem}.{ext}"


def _unique(name: str, taken: set[str]) -> str:
    stem, ext = name.rsplit(".", 1)
    n = 1
    while name.lower() in taken:
        n += 1
        name = f"{stem} ({n}).{ext}"
    taken.add(name.lower())
    return name


def _one_line(text: str) -> str:
    return "".join(" " if unicodedata.category(ch)[0] == "C" else ch for ch in text)


class _Sink:
    """Where the zip writes: what it wrote since the last take (a stream, not seekable)."""

    def __init__(self):
        self.chunks: list[bytes] = []

    def write(self, data) -> int:
        self.chunks.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data, self.chunks = b"".join(self.chunks), []
        return data
