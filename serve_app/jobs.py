"""Jobs as the API sees them: accept (store audio, then commit the row), run sync, read results."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict

from serve_app.backend import TranscriptionBackend
from serve_app.blobs import BlobNotFound, BlobStore
from serve_app.engine import DecodeOptions, Transcript, join_pieces
from serve_app.errors import ServiceError
from serve_app.jobstore import Job, JobStore
from serve_app.preprocess import PrepareOptions
from serve_app.schemas import TranscriptionResult


def audio_key(job_id: uuid.UUID, filename: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", filename or "audio")[-100:] or "audio"
    return f"audio/{job_id}/{safe}"


def result_key(job_id: uuid.UUID) -> str:
    return f"results/{job_id}.json"


def job_options(options: DecodeOptions, prepare: PrepareOptions) -> dict:
    return {"decode": asdict(options), "prepare": asdict(prepare)}


def options_of(job: Job) -> tuple[DecodeOptions, PrepareOptions]:
    return DecodeOptions(**job.options.get("decode", {})), PrepareOptions(**job.options.get("prepare", {}))


class JobService:
    def __init__(self, store: JobStore, blobs: BlobStore, backend: TranscriptionBackend, *, max_attempts: int = 3):
        self.store = store
        self.blobs = blobs
        self.backend = backend
        self.max_attempts = max_attempts

    async def submit(
        self,
        *,
        user_id: str,
        filename: str,
        blocks: AsyncIterator[bytes],
        model: str,
        options: DecodeOptions,
        prepare: PrepareOptions,
        webhook_url: str | None,
    ) -> Job:
        """Store the audio first, then commit the job: a 202 means both are durable."""
        job_id = uuid.uuid4()
        key = audio_key(job_id, filename)
        size = await self.blobs.put_stream(key, blocks)
        try:
            return await self.store.create(
                job_id=job_id,
                user_id=user_id,
                filename=filename,
                model=model,
                language=options.language,
                task=options.task,
                options=job_options(options, prepare),
                audio_key=key,
                audio_bytes=size,
                webhook_url=webhook_url,
                max_attempts=self.max_attempts,
            )
        except BaseException:
            await self.blobs.delete(key)  # no orphan audio for a job that was never committed
            raise

    async def run_sync(
        self,
        *,
        user_id: str,
        filename: str,
        audio: bytes,
        model: str,
        options: DecodeOptions,
        prepare: PrepareOptions,
        request_id: str,
    ) -> TranscriptionResult:
        """Transcribe now, recorded as a job that ends COMPLETED or FAILED."""
        started = time.perf_counter()
        job, owner = await self._record_sync(user_id, filename, audio, model, options, prepare, request_id)
        try:
            transcript = await self.backend.transcribe(audio, model, options, prepare)
        except BaseException as exc:
            await self._failed(job, owner, exc)
            raise
        return await self._completed(job, owner, transcript, model, started)

    async def stream_sync(
        self,
        *,
        user_id: str,
        filename: str,
        audio: bytes,
        model: str,
        options: DecodeOptions,
        prepare: PrepareOptions,
        request_id: str,
    ) -> AsyncIterator[Transcript]:
        """Like ``run_sync``, but yields the transcript part by part as it is decoded."""
        started = time.perf_counter()
        job, owner = await self._record_sync(user_id, filename, audio, model, options, prepare, request_id)
        parts: list[Transcript] = []
        try:
            async for part in self.backend.transcribe_stream(audio, model, options, prepare):
                parts.append(part)
                yield part
        except BaseException as exc:  # GeneratorExit too: the client went away mid-stream
            await asyncio.shield(self._failed(job, owner, exc))
            raise
        await self._completed(job, owner, join_pieces(parts, options, None), model, started)

    async def _record_sync(self, user_id, filename, audio, model, options, prepare, request_id):
        owner = f"sync:{request_id}"
        job = await self.store.create(
            user_id=user_id,
            filename=filename,
            model=model,
            language=options.language,
            task=options.task,
            options=job_options(options, prepare),
            audio_bytes=len(audio),
            sync_owner=owner,
        )
        return job, owner

    async def _failed(self, job: Job, owner: str, exc: BaseException) -> None:
        if isinstance(exc, ServiceError):
            reason = exc.message
        elif isinstance(exc, (GeneratorExit, asyncio.CancelledError)):
            reason = "The client went away before the transcription was finished."
        else:
            reason = f"{type(exc).__name__}: {exc}"
        await self.store.fail(job.id, owner, reason, retry=False)

    async def _completed(self, job: Job, owner: str, transcript: Transcript, model: str, started: float):
        elapsed = time.perf_counter() - started
        result = TranscriptionResult.from_transcript(transcript, id=str(job.id), model=model, processing_time=elapsed)
        await self.blobs.put_bytes(result_key(job.id), result.model_dump_json().encode())
        await self.store.complete(
            job.id,
            owner,
            result_key=result_key(job.id),
            duration=transcript.duration,
            preview=result.text,
            language=transcript.language,
            processing_seconds=elapsed,
        )
        return result

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
