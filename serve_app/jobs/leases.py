"""A running job's lease, renewed while its work goes on: a job whose holder stops renewing (its
process died) is taken back by the reaper, one whose holder is alive never is.

Both holders of running jobs use it: the JobWorker (async jobs) and the request that runs a
synchronous transcription, however long the recording takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable

from serve_app.core.errors import DatabaseUnavailable

log = logging.getLogger(__name__)


class LeaseKeeper:
    """Renews ``owner``'s lease on a job every third of ``seconds``; when the job turns out to be
    no longer the owner's (the reaper took it, or it was deleted), stops and calls ``on_lost``."""

    def __init__(
        self,
        store,
        job_id: uuid.UUID,
        owner: str,
        seconds: float,
        on_lost: Callable[[], object] | None = None,
    ):
        self.store, self.job_id, self.owner, self.seconds = store, job_id, owner, seconds
        self.on_lost = on_lost
        self.lost = False
        self._task: asyncio.Task | None = None

    def start(self) -> LeaseKeeper:
        self._task = asyncio.get_running_loop().create_task(self._renew())
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self.seconds / 3)
            try:
                still_mine = await self.store.renew(self.job_id, self.owner, self.seconds)
            except DatabaseUnavailable:
                continue  # keep working; a renewal may succeed before the lease runs out
            if not still_mine:
                self.lost = True
                log.warning("job %s: lease of %s lost", self.job_id, self.owner)
                if self.on_lost is not None:
                    self.on_lost()
                return


@contextlib.asynccontextmanager
async def kept(
    store, job_id: uuid.UUID, owner: str, seconds: float, on_lost: Callable[[], object] | None = None
) -> AsyncIterator[LeaseKeeper]:
    """The lease renewed for as long as the block runs."""
    keeper = LeaseKeeper(store, job_id, owner, seconds, on_lost).start()
    try:
        yield keeper
    finally:
        await keeper.stop()
