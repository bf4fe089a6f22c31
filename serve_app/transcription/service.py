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
import contextlib
import time
import uuid
from collections.abc import AsyncIterator

from serve_app.asr.autoselect import DEFAULT_QUALITY, ModelChoice
from serve_app.asr.catalog import ModelCatalog, ModelSpec
from serve_app.audio.uploads import AudioUpload
from serve_app.core.errors import InvalidParameter, ModelUnavailable, ServiceError, UnknownModel, failure_reason
from serve_app.core.results import TranscriptionResult
from serve_app.core.settings import Settings
from serve_app.core.transcript import Transcript
from serve_app.jobs.admission import Quotas
from serve_app.jobs.leases import kept
from serve_app.jobs.service import SYNC_OWNER, JobService
from serve_app.jobs.store import Job
from serve_app.jobs.worker import JobWorker
from serve_app.tenancy.keys import Principal
from serve_app.transcription.assembly import Assembly
from serve_app.transcription.backends import TranscriptionBackend
from serve_app.transcription.pipeline import BlobSource
from serve_app.transcription.progress import ProgressReport
from serve_app.transcription.request import AUTO, Resolved, TranscriptionRequest


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
        if request.diarize and not self.settings.diarization:
            raise InvalidParameter(
                "Speaker diarization is off on this service (STT_DIARIZATION=false).",
                code="diarization_unavailable",
                status_code=400,
                param="diarize",
            )
        if request.model == AUTO:
            resolved = request.resolve_auto(default_beam_size=self.settings.beam_size)
            self._target(resolved).check(resolved.decode.language)  # some served model can fit
            return resolved
        return request.resolve(self.model_spec(request.model), default_beam_size=self.settings.beam_size)

    def _target(self, resolved: Resolved) -> str | ModelChoice:
        """What the pipeline runs with: a served model, or model=auto's choice among them."""
        if resolved.model != AUTO:
            return resolved.model
        return self.catalog.choice(self.served, resolved.quality or DEFAULT_QUALITY, resolved.decode.task)

    def upload(self, source, filename: str | None = None) -> AudioUpload:
        return AudioUpload(source, self.settings.max_upload_mb * 2**20, filename)

    # -- running -----------------------------------------------------------------------------
    async def transcribe(
        self, resolved: Resolved, upload: AudioUpload, *, caller: Principal, request_id: str
    ) -> TranscriptionResult:
        """Transcribe now, as ``caller``'s tenant; the job row ends COMPLETED or FAILED."""
        result = None
        async with contextlib.aclosing(self._run_sync(resolved, upload, caller, request_id)) as items:
            async for item in items:
                result = item
        return result

    async def stream(
        self, resolved: Resolved, upload: AudioUpload, *, caller: Principal, request_id: str
    ) -> AsyncIterator[Transcript | TranscriptionResult]:
        """Like ``transcribe``, but yields the transcript part by part as it is decoded, then
        the stored result (the whole recording's duration, its job id)."""
        # Closed with this generator: a client that leaves mid-stream fails the job now.
        async with contextlib.aclosing(self._run_sync(resolved, upload, caller, request_id)) as items:
            async for item in items:
                yield item

    async def _run_sync(self, resolved: Resolved, upload: AudioUpload, caller: Principal, request_id: str):
        """Each part's transcript as it comes, then the result (stored, the job COMPLETED). The
        job's lease is renewed while it runs, however long that takes; a failure anywhere,
        storing the result included, ends the job FAILED at once."""
        await self._check_available(resolved.model)
        audio = await upload.read()
        started = time.perf_counter()
        job = await self._record(resolved, upload.filename, len(audio), caller, request_id)
        owner = _owner(request_id)
        report = ProgressReport(self.jobs.store, job.id, owner) if job is not None else None
        assembly = Assembly()
        try:
            async with self._lease(job, owner):
                items = self.backend.transcribe(
                    audio, self._target(resolved), resolved.decode, resolved.prepare, resolved.diarize
                )
                async for part in assembly.follow(items, report.part if report else None):
                    yield part.transcript
                if report is not None:
                    await report.finish()
                result = await self._complete(job, owner, assembly, started)
        except BaseException as exc:  # GeneratorExit too: the client went away mid-stream
            # Shielded: a client that went away cancels this request, and Serve may cancel it
            # again; the row must still end FAILED now, not PROCESSING until its lease expires.
            await asyncio.shield(self._fail(job, owner, exc))
            raise
        yield result

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
        return await self.job_service().submit(
            user_id=caller.tenant,
            filename=upload.filename,
            blocks=upload.blocks(),
            spec=resolved.job_spec(),
            webhook_url=webhook_url,
            request_id=request_id,
            quotas=Quotas.of(caller.limits),
            max_seconds=self.settings.max_audio_seconds,
        )

    async def transcribe_job(self, job: Job, started: float, owner: str | None = None) -> TranscriptionResult:
        """A claimed async job's transcription (the JobWorker stores and completes it); its
        audio is read from the BlobStore as a stream where it is decoded, and its progress
        is reported as it goes when ``owner`` (the lease holder) is given."""
        resolved = Resolved.of_job(job.model, job.options)
        report = ProgressReport(self.job_service().store, job.id, owner) if owner else None
        items = self.backend.transcribe(
            BlobSource(job.audio_key), self._target(resolved), resolved.decode, resolved.prepare, resolved.diarize
        )
        assembly = Assembly()
        transcript = await assembly.collect(items, report.part if report else None)
        if report is not None:
            await report.finish()
        return self._result(transcript, str(job.id), assembly.done.model, started)

    def job_worker(self, **options) -> JobWorker:
        """A JobWorker that runs this service's queued jobs (``options``: JobWorker's)."""
        return JobWorker(
            self.job_service(),
            self.transcribe_job,
            tenant_concurrency=self.settings.limit_max_concurrent,
            tenant_audio_hours=self.settings.limit_audio_hours_per_day,
            retention_days=self.settings.retention_days,
            retention_results=self.settings.retention_results,
            **options,
        )

    async def _check_available(self, model: str) -> None:
        """A sync request for a model with no running replica is refused now, not left waiting
        for one (an async job waits in the queue instead)."""
        if model != AUTO and not await self.backend.available(model):
            raise ModelUnavailable(
                f"Model '{model}' has no running replica right now; retry in a few seconds, "
                "or submit an asynchronous job (sync=false), which waits for it."
            )

    # -- recording ---------------------------------------------------------------------------
    def job_service(self) -> JobService:
        """The job store and blobs; an instance without a database answers 422 jobs_unavailable."""
        if self.jobs is None:
            raise ServiceError(
                "This instance keeps no jobs (it has no database): asynchronous jobs, the job list "
                "and API keys are unavailable.",
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
            spec=resolved.job_spec(),
            owner=_owner(request_id),
            lease_seconds=self.settings.lease_seconds,
            max_concurrent=(caller.limits.max_concurrent or 0) if caller.limits else 0,
            request_id=request_id,
        )

    def _lease(self, job: Job | None, owner: str):
        """The sync job's lease, renewed while the transcription runs."""
        if job is None:
            return contextlib.nullcontext()
        return kept(self.jobs.store, job.id, owner, self.settings.lease_seconds)

    async def _fail(self, job: Job | None, owner: str, exc: BaseException) -> None:
        if job is not None:
            await self.jobs.fail(job, owner, failure_reason(exc), retry=False)

    async def _complete(self, job: Job | None, owner: str, assembly: Assembly, started: float) -> TranscriptionResult:
        job_id = str(job.id) if job is not None else uuid.uuid4().hex
        result = self._result(assembly.transcript(), job_id, assembly.done.model, started)
        if job is not None and await self.jobs.complete(job, owner, result) is None:
            raise ServiceError(
                "This transcription's job was ended while it ran (its lease was lost); retry.",
                code="job_lost",
                status_code=503,
            )
        return result


def _owner(request_id: str) -> str:
    return f"{SYNC_OWNER}{request_id}"
