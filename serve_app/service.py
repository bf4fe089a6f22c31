"""Transcription as every entry point runs it: check, record as a job, transcribe, store the result.

REST and OpenAI routes, the Ingress's Python handle and the JobWorker all go through one
``TranscriptionService``. It resolves a request against the served models, records every
transcription as a job row, builds the ``TranscriptionResult`` in one place, and stores it and
completes the job in one place (``JobService.complete``).

``processing_time`` (result field and job column alike) is the seconds the service spent on the
audio: from the moment it had the whole upload (sync) or a worker claimed the job (async) to the
finished transcript. Time waiting in the job queue is not in it (``started_at - created_at``).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

from serve_app.auth import Principal
from serve_app.backend import TranscriptionBackend
from serve_app.blobs import BlobNotFound
from serve_app.catalog import ModelCatalog, ModelSpec
from serve_app.errors import ModelUnavailable, ServiceError, UnknownModel
from serve_app.jobs import SYNC_OWNER, JobService
from serve_app.jobstore import Job
from serve_app.request import Resolved, TranscriptionRequest
from serve_app.schemas import TranscriptionResult
from serve_app.settings import Settings
from serve_app.transcript import Transcript, join
from serve_app.uploads import AudioUpload


def failure_reason(exc: BaseException) -> str:
    """What a failed job's ``error`` says."""
    if isinstance(exc, ServiceError):
        return exc.message
    if isinstance(exc, (GeneratorExit, asyncio.CancelledError)):
        return "The client went away before the transcription was finished."
    return f"{type(exc).__name__}: {exc}"


class TranscriptionService:
    def __init__(
        self, settings: Settings, catalog: ModelCatalog, backend: TranscriptionBackend, jobs: JobService | None = None
    ):
        for name in settings.models:
            catalog.get(name)  # fail at start-up, not on the first request, for a typo
        self.settings = settings
        self.catalog = catalog
        self.backend = backend
        self.jobs = jobs

    # -- checking ----------------------------------------------------------------------------
    @property
    def served(self) -> list[str]:
        return list(self.settings.models)

    def model_spec(self, name: str | None) -> ModelSpec:
        name = name or self.settings.default_model
        if name not in self.served:
            raise UnknownModel(
                f"Model '{name}' is not served here; available models: {', '.join(self.served)}.", param="model"
            )
        return self.catalog.get(name)

    def resolve(self, request: TranscriptionRequest) -> Resolved:
        return request.resolve(self.model_spec(request.model), default_beam_size=self.settings.beam_size)

    def upload(self, source, filename: str | None = None) -> AudioUpload:
        return AudioUpload(source, self.settings.max_upload_mb * 2**20, filename)

    # -- running -----------------------------------------------------------------------------
    async def transcribe(
        self, resolved: Resolved, upload: AudioUpload, *, caller: Principal, request_id: str
    ) -> TranscriptionResult:
        """Transcribe now, as ``caller``'s tenant; the job row ends COMPLETED or FAILED."""
        await self._check_available(resolved.model)
        audio = await upload.read()
        started = time.perf_counter()
        job = await self._record(resolved, upload.filename, len(audio), caller, request_id)
        try:
            transcript = await self.backend.transcribe(audio, resolved.model, resolved.decode, resolved.prepare)
        except BaseException as exc:
            # Shielded: a client that went away cancels this request, and Serve may cancel it
            # again; the row must still end FAILED now, not PROCESSING until its lease expires.
            await asyncio.shield(self._fail(job, request_id, exc))
            raise
        return await self._complete(job, request_id, transcript, resolved.model, started)

    async def stream(
        self, resolved: Resolved, upload: AudioUpload, *, caller: Principal, request_id: str
    ) -> AsyncIterator[Transcript]:
        """Like ``transcribe``, but yields the transcript part by part as it is decoded."""
        await self._check_available(resolved.model)
        audio = await upload.read()
        started = time.perf_counter()
        job = await self._record(resolved, upload.filename, len(audio), caller, request_id)
        parts: list[Transcript] = []
        try:
            async for part in self.backend.transcribe_stream(audio, resolved.model, resolved.decode, resolved.prepare):
                parts.append(part)
                yield part
        except BaseException as exc:  # GeneratorExit too: the client went away mid-stream
            await asyncio.shield(self._fail(job, request_id, exc))
            raise
        await self._complete(job, request_id, join(parts), resolved.model, started)

    async def submit(
        self,
        resolved: Resolved,
        upload: AudioUpload,
        *,
        caller: Principal,
        webhook_url: str | None,
        request_id: str | None = None,
    ) -> Job:
        """An async job of ``caller``'s tenant: its audio stored and its row committed before this returns."""
        return await self._jobs().submit(
            user_id=caller.tenant,
            filename=upload.filename,
            blocks=upload.blocks(),
            resolved=resolved,
            webhook_url=webhook_url,
            request_id=request_id,
        )

    async def transcribe_job(self, job: Job, started: float) -> TranscriptionResult:
        """A claimed async job's transcription (the JobWorker stores and completes it)."""
        resolved = Resolved.of_job(job.model, job.options)
        try:
            audio = await self._jobs().blobs.get_bytes(job.audio_key)
        except BlobNotFound:
            raise ServiceError(f"The job's audio ({job.audio_key}) is missing from storage.") from None
        transcript = await self.backend.transcribe(audio, resolved.model, resolved.decode, resolved.prepare)
        return self._result(transcript, str(job.id), job.model, started)

    async def _check_available(self, model: str) -> None:
        """A sync request for a model with no running replica is refused now, not left waiting
        for one (an async job waits in the queue instead)."""
        if not await self.backend.available(model):
            raise ModelUnavailable(
                f"Model '{model}' has no running replica right now; retry in a few seconds, "
                "or submit an asynchronous job (sync=false), which waits for it."
            )

    # -- recording ---------------------------------------------------------------------------
    def _jobs(self) -> JobService:
        if self.jobs is None:
            raise ServiceError(
                "Asynchronous jobs need a job store; this instance has none.",
                code="jobs_unavailable",
                status_code=422,
            )
        return self.jobs

    @staticmethod
    def _result(transcript: Transcript, job_id: str, model: str, started: float) -> TranscriptionResult:
        return TranscriptionResult.from_transcript(
            transcript, id=job_id, model=model, processing_time=time.perf_counter() - started
        )

    async def _record(self, resolved: Resolved, filename: str, size: int, caller: Principal, request_id: str):
        if self.jobs is None:
            return None
        return await self.jobs.record_sync(
            user_id=caller.tenant,
            filename=filename,
            audio_bytes=size,
            resolved=resolved,
            owner=_owner(request_id),
            max_concurrent=(caller.limits.max_concurrent or 0) if caller.limits else 0,
            request_id=request_id,
        )

    async def _fail(self, job: Job | None, request_id: str, exc: BaseException) -> None:
        if job is not None:
            await self.jobs.fail(job, _owner(request_id), failure_reason(exc), retry=False)

    async def _complete(self, job: Job | None, request_id: str, transcript: Transcript, model: str, started: float):
        result = self._result(transcript, str(job.id) if job else uuid.uuid4().hex, model, started)
        if job is not None:
            await self.jobs.complete(job, _owner(request_id), result)
        return result


def _owner(request_id: str) -> str:
    return f"{SYNC_OWNER}{request_id}"
