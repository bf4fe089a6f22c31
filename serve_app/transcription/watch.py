"""One watcher per job, however many streams follow it: a job's event streams on this replica
share one look at PostgreSQL every ``poll_s`` (the job's row, then its new pieces), instead of
each stream polling on its own. The watcher starts with its job's first stream and stops with
its last, or once the job has ended."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from serve_app.core.errors import DatabaseUnavailable
from serve_app.jobs.store import Job, JobStore
from serve_app.transcription.progress import read_parts

ENDED = ("COMPLETED", "FAILED")
POLL_SECONDS = 0.5  # how often a job's watcher looks at it (one indexed read, and one for new pieces)


@dataclass
class JobState:
    """What the watcher last saw: the row (None: deleted), every piece so far, an error."""

    job: Job | None = None
    parts: list[dict] = field(default_factory=list)
    error: str | None = None
    version: int = 0

    @property
    def ended(self) -> bool:
        return self.error is not None or self.job is None or self.job.status in ENDED


class _Watcher:
    def __init__(self, store: JobStore, job_id: uuid.UUID, poll_s: float):
        self.store, self.job_id, self.poll_s = store, job_id, poll_s
        self.state = JobState()
        self.changed = asyncio.Condition()
        self.followers = 0
        self.task: asyncio.Task | None = None

    async def run(self) -> None:
        try:
            await self._poll()
        except Exception as exc:  # the streams end with an error event, not wait forever
            async with self.changed:
                self.state.error = f"The job's events stopped: {type(exc).__name__}."
                self.state.version += 1
                self.changed.notify_all()

    async def _poll(self) -> None:
        seen = None
        while True:
            try:
                job = await self.store.get(self.job_id)
                parts = await read_parts(
                    self.store, self.job_id, self.state.parts[-1]["seq"] if self.state.parts else 0
                )
                error = None
            except DatabaseUnavailable as exc:
                job, parts, error = self.state.job, [], exc.message
            now = (job.status, job.progress) if job else None
            if parts or now != seen or error or self.state.version == 0:
                seen = now
                async with self.changed:
                    self.state.job, self.state.error = job, error
                    self.state.parts.extend(parts)
                    self.state.version += 1
                    self.changed.notify_all()
            if self.state.ended:
                return
            await asyncio.sleep(self.poll_s)


class JobWatch:
    """The watchers of one replica, by job."""

    def __init__(self, store: JobStore, poll_s: float | None = None):
        self.store, self.poll_s = store, poll_s
        self._watchers: dict[uuid.UUID, _Watcher] = {}

    @property
    def watched(self) -> int:
        return len(self._watchers)

    @contextlib.asynccontextmanager
    async def follow(self, job_id: uuid.UUID) -> AsyncIterator[_Follower]:
        watcher = self._watchers.get(job_id)
        if watcher is None or (watcher.task is not None and watcher.task.done()):
            poll_s = self.poll_s if self.poll_s is not None else POLL_SECONDS
            watcher = self._watchers[job_id] = _Watcher(self.store, job_id, poll_s)
            watcher.task = asyncio.create_task(watcher.run())
        watcher.followers += 1
        try:
            yield _Follower(watcher)
        finally:
            watcher.followers -= 1
            if watcher.followers == 0:
                if self._watchers.get(job_id) is watcher:
                    del self._watchers[job_id]
                watcher.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher.task


class _Follower:
    """One stream's place in its job's state."""

    def __init__(self, watcher: _Watcher):
        self._watcher, self._version = watcher, 0

    async def next(self, timeout: float) -> JobState | None:
        """The state once it has changed since this follower last looked; None after
        ``timeout`` seconds without a change."""
        watcher = self._watcher
        async with watcher.changed:
            try:
                await asyncio.wait_for(watcher.changed.wait_for(lambda: watcher.state.version > self._version), timeout)
            except TimeoutError:
                return None
            self._version = watcher.state.version
            return watcher.state
