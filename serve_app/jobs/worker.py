"""JobWorker: takes PENDING jobs from PostgreSQL and runs them, under a renewed lease.

Wakes on LISTEN/NOTIFY, polls as a fallback, reclaims jobs whose lease expired (their worker
died), bounds attempts, writes the result and then marks the job done (fenced by the lease).
What a job runs is handed in (``run``: TranscriptionService.transcribe_job); this module never
transcribes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable

from serve_app.core.errors import DatabaseUnavailable, ServiceError, failure_reason
from serve_app.core.metrics import METRICS
from serve_app.core.results import TranscriptionResult
from serve_app.jobs.batches import BatchDeliveries, end_batch
from serve_app.jobs.leases import LeaseKeeper
from serve_app.jobs.service import JobService
from serve_app.jobs.store import Job
from serve_app.jobs.webhooks import WebhookSender

log = logging.getLogger(__name__)
RETENTION_EVERY_S = 600.0  # how often a worker deletes what is past the retention age


# The work of one claimed job: (job, when it started, the lease owner) -> its result.
RunJob = Callable[[Job, float, str], Awaitable[TranscriptionResult]]


class JobWorker:
    def __init__(
        self,
        jobs: JobService,
        run: RunJob,
        *,
        tenant_concurrency: int = 0,
        tenant_audio_hours: float = 0.0,
        retention_days: float = 0.0,
        retention_results: bool = False,
        webhooks: WebhookSender | None = None,
        owner: str | None = None,
        lease_seconds: float = 30.0,
        concurrency: int = 4,
        poll_seconds: float = 5.0,
    ):
        self.jobs, self.store, self.run_job, self.webhooks = jobs, jobs.store, run, webhooks
        if webhooks is not None and webhooks.secrets is None:
            webhooks.secrets = self.store  # where tenants' secret generations are kept
        self.owner = owner or f"worker-{uuid.uuid4().hex[:12]}"
        self.lease_seconds = lease_seconds
        self.concurrency = concurrency
        self.poll_seconds = poll_seconds
        # A tenant's running jobs, where its own limit is not set (0: none).
        self.tenant_concurrency = tenant_concurrency
        self.tenant_audio_hours = tenant_audio_hours  # a tenant's daily audio, where its own is not set
        self.retention = (retention_days, retention_results)  # 0 days: keep everything
        self._swept = 0.0  # when retention last ran
        self._wake = asyncio.Event()
        self._running: dict[asyncio.Task, Job] = {}
        self._listener = None
        self._loop_task: asyncio.Task | None = None
        self.processed = 0
        self.queue_depth = 0  # PENDING jobs at the last look, for autoscaling
        self._looked_around = 0.0  # when leases were last expired and the queue counted

    @property
    def running(self) -> int:
        """Jobs this worker runs now."""
        return len(self._running)

    # -- loop ----------------------------------------------------------------------------------
    async def run(self) -> None:
        """Forever: expire leases, claim while there is room, then sleep until woken."""
        self._loop_task = asyncio.current_task()
        while True:
            try:
                await self._ensure_listener()
                # At most once a second: every finished job wakes the loop, and with many short
                # jobs these two queries were most of what the loop asked of the database.
                if time.monotonic() - self._looked_around >= 1.0:
                    self._looked_around = time.monotonic()
                    await self.store.expire_leases()
                    active = await self.store.stats()
                    self.queue_depth = active["queue_depth"]
                    METRICS.active_jobs(active["queue_depth"], active["processing"])
                    if self.retention[0] and time.monotonic() - self._swept >= RETENTION_EVERY_S:
                        self._swept = time.monotonic()
                        await self.jobs.expire(self.retention[0], results=self.retention[1])
                while len(self._running) < self.concurrency:
                    job = await self.store.claim(
                        self.owner, self.lease_seconds, self.tenant_concurrency, self.tenant_audio_hours
                    )
                    if job is None:
                        break
                    task = asyncio.create_task(self._process(job))
                    self._running[task] = job
                    task.add_done_callback(self._job_done)
            except DatabaseUnavailable as exc:
                log.warning("worker %s: %s", self.owner, exc.message)
                await self._drop_listener()
            except Exception:
                log.exception("worker %s: unexpected error in loop", self.owner)
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_seconds)

    def _job_done(self, task: asyncio.Task) -> None:
        self._running.pop(task, None)
        self._wake.set()  # a free slot: look for more work now

    async def _ensure_listener(self) -> None:
        if self._listener is not None and not self._listener.is_closed():
            return
        try:
            self._listener = await self.store.listen(lambda _job_id: self._wake.set())
        except Exception as exc:  # polling still works without it
            raise DatabaseUnavailable(f"cannot LISTEN ({type(exc).__name__})") from exc

    async def _drop_listener(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(Exception):
                self._listener.terminate()
            self._listener = None

    async def close(self) -> None:
        """Stop: the jobs running here go back to the queue at once, their attempts not
        counted, for another worker to take (instead of waiting out their leases)."""
        if self._loop_task is not None:
            self._loop_task.cancel()  # claim nothing more
        running = dict(self._running)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        if self.webhooks is not None:
            await self.webhooks.close()  # deliveries under way end with the worker
        for job in running.values():
            try:
                if await self.store.release(job.id, self.owner):
                    log.info("worker %s: job %s handed back to the queue", self.owner, job.id)
            except DatabaseUnavailable:
                pass  # its lease expires instead
        await self._drop_listener()

    # -- one job -------------------------------------------------------------------------------
    async def _process(self, job: Job) -> None:
        started = time.perf_counter()
        work = asyncio.create_task(self.run_job(job, started, self.owner))
        keeper = LeaseKeeper(self.store, job.id, self.owner, self.lease_seconds, on_lost=work.cancel).start()
        try:
            result = await work
        except asyncio.CancelledError:
            if keeper.lost:
                log.warning("job %s: lease lost, dropped by %s", job.id, self.owner)
                return
            raise
        except DatabaseUnavailable:
            return  # the lease will expire and the job will be retried
        except ServiceError as exc:
            # 4xx: the audio or request is bad, and retrying will not help. 5xx: the service
            # could not do it now (a model's replica died with its node): another attempt.
            await self._finish_failed(job, failure_reason(exc), retry=exc.status_code >= 500)
            return
        except Exception as exc:
            log.exception("job %s failed on attempt %s", job.id, job.attempts)
            await self._finish_failed(job, failure_reason(exc), retry=True)
            return
        finally:
            await keeper.stop()
        await self._finish_completed(job, result)

    async def _finish_completed(self, job: Job, result: TranscriptionResult) -> None:
        try:
            done = await self.jobs.complete(job, self.owner, result)
        except DatabaseUnavailable:
            return  # lease expires, job reruns; the result blob is simply overwritten then
        except Exception as exc:  # the result could not be stored: another attempt, now
            log.exception("job %s: storing its result failed", job.id)
            await self._finish_failed(job, f"Storing the result failed: {failure_reason(exc)}", retry=True)
            return
        if done is None:  # deleted meanwhile, or another worker owns it now
            return
        self.processed += 1
        self._notify(done, "job.completed", {"result": result.model_dump()})
        await self._batch_step(done)

    async def _finish_failed(self, job: Job, error: str, *, retry: bool) -> None:
        try:
            failed = await self.jobs.fail(job, self.owner, error, retry=retry)
        except DatabaseUnavailable:
            return
        if failed is not None and failed.status == "FAILED":
            self._notify(failed, "job.failed", {"error": error})
            await self._batch_step(failed)

    async def _batch_step(self, job: Job) -> None:
        """After a job of a batch ends: if it was the batch's last, the one batch webhook."""
        if job.batch_id is None:
            return
        try:
            ended = await end_batch(self.store, job.batch_id)
        except DatabaseUnavailable:
            return
        if ended is None or not ended[0].webhook_url or self.webhooks is None:
            return
        target, summary = ended
        payload = {"event": "batch.ended", "id": str(target.id), "request_id": target.request_id, **summary}
        self.webhooks.submit(BatchDeliveries(self.store), target, "batch.ended", payload)

    def _notify(self, job: Job, event: str, extra: dict) -> None:
        if not job.webhook_url or self.webhooks is None:
            return
        payload = {"event": event, "id": str(job.id), "request_id": job.request_id, "status": job.status, **extra}
        self.webhooks.submit(self.store, job, event, payload)
