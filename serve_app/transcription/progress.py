"""A running job's progress, as its pieces finish: the fraction of its audio transcribed and the
text of each piece, written to its row at most every ``FLUSH_SECONDS`` (a job that finishes
sooner writes nothing until it completes: no database write per piece)."""

from __future__ import annotations

import logging
import time
import uuid

from serve_app.core.errors import DatabaseUnavailable
from serve_app.jobs import queries
from serve_app.jobs.store import JobStore
from serve_app.transcription.pipeline import Part

log = logging.getLogger(__name__)

FLUSH_SECONDS = 2.0
MAX_BEFORE_DONE = 0.99  # 1.0 is the completed job's alone


class ProgressReport:
    def __init__(self, store: JobStore, job_id: uuid.UUID, owner: str, flush_seconds: float | None = None):
        self.store, self.job_id, self.owner = store, job_id, owner
        self.flush_seconds = FLUSH_SECONDS if flush_seconds is None else flush_seconds
        self.progress: float | None = None
        self.sent = 0  # pieces written
        self._pending: list[tuple[int, float, float, str]] = []
        self._seq = 0
        self._last = time.monotonic()

    async def part(self, part: Part) -> None:
        self._seq += 1
        self._pending.append((self._seq, part.start, part.end, part.transcript.text))
        if part.declared:
            # Pieces come in order: the end of the latest is how far the transcript reaches.
            self.progress = round(min(MAX_BEFORE_DONE, part.end / part.declared), 4)
        if time.monotonic() - self._last >= self.flush_seconds:
            await self.flush()

    async def finish(self) -> None:
        """Before the job completes: the texts not yet written, when some were (a long job's
        stream then has every piece); a job that finished before its first write writes none."""
        if self.sent and self._pending:
            await self.flush()

    async def flush(self) -> None:
        self._last = time.monotonic()
        pending, self._pending = self._pending, []
        try:
            await write_progress(self.store, self.job_id, self.owner, self.progress, pending)
        except DatabaseUnavailable:
            log.warning("job %s: progress not written (database unavailable)", self.job_id)
            self._pending = pending + self._pending  # next time
            return
        self.sent += len(pending)


async def write_progress(
    store: JobStore, job_id: uuid.UUID, owner: str, progress: float | None, parts: list[tuple[int, float, float, str]]
) -> None:
    """A running job's progress and the texts of pieces finished since the last write (fenced
    by the lease: nothing is written for a job this owner no longer holds)."""
    seqs, starts, ends, texts = (list(column) for column in zip(*parts)) if parts else ([], [], [], [])
    async with store.connection() as conn:
        await conn.execute(queries.PROGRESS, job_id, owner, progress, seqs, starts, ends, texts)


async def read_parts(store: JobStore, job_id: uuid.UUID, after: int = 0) -> list[dict]:
    """The texts of a job's finished pieces after piece number ``after``, in order."""
    async with store.connection() as conn:
        return [dict(r) for r in await conn.fetch(queries.PARTS, job_id, after)]
