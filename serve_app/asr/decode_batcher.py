"""Cross-request batching that forms a batch when a model worker comes free.

Ray Serve's ``@serve.batch`` closes a batch when it is full or ``batch_wait_timeout_s`` after its
first request, and only then waits for one of ``max_concurrent_batches`` to finish. While every
model worker is busy, batches therefore close on the timer half empty and queue for a worker,
and the requests that arrive meanwhile cannot join them: at concurrency 16 on 2 cores the
corpus took 14-17 Whisper windows in 9-12 decode calls where 11 windows in 4 calls hold it.

Here the batch is taken from the queue when a worker is ready for it: everything queued that
fits in ``max_size`` (counted by ``size``, in 30 s windows for the Transcriber). A worker that
comes free while another decodes waits up to ``wait_s`` for a fuller batch; on an idle model a
lone request starts at once, unless its caller says more are on their way (``coming``: the
uploads the Preprocessor was still working on): then the burst is gathered first, so that its
first request does not take a whole window alone. An ``urgent`` item (a caller waits on the line:
a sync request) goes ahead of every queued item that is not (a queued job's), so one tenant's
thousand queued jobs cannot hold another's sync request behind them; it starts as soon as a
worker is free, in a batch of urgent items only (not one filled up with a job's pieces, which
would make it wait for their decode too). While callers wait on the line (an urgent item is
queued or decoding, or came or was answered within ``URGENT_RECENT_S``), queued jobs are decoded
one window at a time, so that a worker comes free for the next caller within one window's
decode, not a whole batch's; and a worker that comes free waits up to ``URGENT_GRACE_S`` for a
caller's next request before it takes a job's piece: callers send their next request as soon as
they have their answer, and it would otherwise find every worker busy with jobs again. Jobs have
what the callers leave. Plain asyncio, no Ray: the Transcriber holds one per model and tests
drive it directly.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

# How long after an urgent item arrived or was answered queued work still yields to the next one:
# sync callers send their next request within a fraction of a second of their last answer.
URGENT_RECENT_S = 2.0
# How long a free worker keeps itself for the next urgent item then (a request's way from the
# caller's answer back to the model, under load, is 0.1-0.2 s here).
URGENT_GRACE_S = 0.6


@dataclass
class _Pending(Generic[T]):
    item: T
    size: float
    future: asyncio.Future = field(repr=False)
    urgent: bool = False


class DecodeBatcher(Generic[T, R]):
    """Queue of items; ``workers`` loops each take a batch and run ``run`` on it in a thread.

    ``run`` gets a list of items and returns one result per item, in order. An exception from
    ``run`` fails every request of that batch and nothing else.
    """

    def __init__(
        self,
        run: Callable[[list[T]], Sequence[R]],
        *,
        size: Callable[[T], float],
        workers: int,
        max_size: float,
        wait_s: float,
        coming: Callable[[T], int] | None = None,
        urgent: Callable[[T], bool] | None = None,
    ):
        self._run = run
        self._size = size
        self._urgent = urgent
        self._coming_after = coming
        self._coming = 0  # how many more items the latest arrival said were on their way
        self.workers = workers
        self.set_limits(max_size, wait_s)
        self._queue: deque[_Pending[T]] = deque()
        self._arrived: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task] = []  # the worker loops (a task needs a reference)
        self.busy = 0  # workers running a batch now
        self._urgent_at = -math.inf  # loop time an urgent item last arrived or was answered
        self._urgent_open = 0  # urgent items submitted and not yet answered
        self.batches: deque[float] = deque(maxlen=256)  # sizes of the latest batches taken

    def set_limits(self, max_size: float, wait_s: float) -> None:
        """Reconfigurable at run time; the next batch taken uses the new limits."""
        if max_size < 1 or wait_s < 0:
            raise ValueError(f"need max_size >= 1 and wait_s >= 0, got {max_size}, {wait_s}")
        self.max_size = max_size
        self.wait_s = wait_s

    @property
    def queued(self) -> int:
        return sum(1 for p in self._queue if not p.future.done())

    async def submit(self, item: T) -> R:
        """Queue ``item`` and wait for its result. Cancelling the wait drops the item if it has
        not been taken yet."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # first use, or a new event loop (the old one's tasks are gone)
            self._loop = loop
            self._queue.clear()
            self.busy = 0
            self._arrived = asyncio.Event()
            self._tasks = [loop.create_task(self._worker(n)) for n in range(self.workers)]
        future = loop.create_future()
        pending = _Pending(item, self._size(item), future, bool(self._urgent and self._urgent(item)))
        if pending.urgent:  # ahead of every item that is not, behind the urgent ones before it
            self._urgent_at = loop.time()
            at = next((i for i, p in enumerate(self._queue) if not p.urgent), len(self._queue))
            self._queue.insert(at, pending)
        else:
            self._queue.append(pending)
        self._coming = self._coming_after(item) if self._coming_after else 0
        self._arrived.set()
        if not pending.urgent:
            return await future
        self._urgent_open += 1
        try:
            return await future
        finally:
            self._urgent_open -= 1
            self._urgent_at = loop.time()  # its caller's next request is on its way, likely

    def _queued_size(self) -> float:
        return sum(p.size for p in self._queue if not p.future.done())

    def _take(self) -> list[_Pending[T]]:
        """The oldest live items that fit in ``max_size`` together (at least one); urgent
        items only, when the oldest is urgent.

        With other workers idle, a worker takes only its share of the queue, so the pieces of
        a long request decode on all workers at once: whole windows while there is a window
        for each, else an even split (a few short requests then decode on every worker, two
        half-empty windows side by side, rather than one window on one while the others idle).
        """
        head = self._head()
        if head is None:
            return []
        urgent = head.urgent
        queued = sum(p.size for p in self._queue if not p.future.done() and p.urgent >= urgent)
        limit = self.max_size
        if not urgent and self._callers_waiting():
            limit = min(limit, 1.0)  # a worker free again within one window's decode
        idle = self.workers - self.busy
        if idle > 1:
            limit = min(limit, math.ceil(queued / idle) if queued >= idle else queued / idle)
        elif self.busy and queued > 1 and self._coming:
            # Another worker will come free soon and more requests are on their way: take
            # whole windows only and leave the rest to open the next batch, which they fill.
            limit = min(limit, math.floor(queued))
        batch: list[_Pending[T]] = []
        total = 0.0
        while (pending := self._head()) is not None and pending.urgent >= urgent:
            if batch and total + pending.size > limit + 1e-9:
                break
            batch.append(self._queue.popleft())
            total += pending.size
        return batch

    def _head(self) -> _Pending[T] | None:
        """The oldest live item (those cancelled by their callers before being taken dropped)."""
        while self._queue and self._queue[0].future.done():
            self._queue.popleft()
        return self._queue[0] if self._queue else None

    def _callers_waiting(self) -> bool:
        """Urgent items queued or decoding, or one came or was answered within URGENT_RECENT_S."""
        if self._urgent_open:
            return True
        return self._loop is not None and self._loop.time() - self._urgent_at < URGENT_RECENT_S

    async def _gather(self) -> None:
        """Wait for work; with another worker busy, wait up to ``wait_s`` for a full batch; on
        an idle model, only for the rest of a burst that is on its way."""
        assert self._arrived is not None
        while not self.queued:
            self._arrived.clear()
            await self._arrived.wait()
        head = self._head()
        if head is not None and not head.urgent and self._callers_waiting():
            # Callers are about: keep this worker for the next one a moment before a job's piece.
            deadline = asyncio.get_running_loop().time() + URGENT_GRACE_S
            while (head := self._head()) is None or not head.urgent:
                if not await self._next_arrival(deadline - asyncio.get_running_loop().time()):
                    return  # none came: the job's piece, now
            # one came: gathered as urgent work always is (below)
        if not self.busy:
            # Idle model: a lone request starts now; the start of a burst waits for the rest
            # of it as long as each arrives within wait_s of the one before.
            while self._coming and self._queued_size() < self.max_size:
                if not await self._next_arrival(self.wait_s):
                    return
            return
        deadline = asyncio.get_running_loop().time() + self.wait_s
        while self._queued_size() < self.max_size:
            if not await self._next_arrival(deadline - asyncio.get_running_loop().time()):
                return

    async def _next_arrival(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for another item; False if none came."""
        if timeout <= 0:
            return False
        self._arrived.clear()
        try:
            await asyncio.wait_for(self._arrived.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def _worker(self, number: int) -> None:
        while True:
            try:
                await self._gather()
                batch = self._take()
                if not batch:
                    continue
                self.busy += 1
                self.batches.append(round(sum(p.size for p in batch), 2))
                try:
                    results = await asyncio.to_thread(self._run, [p.item for p in batch])
                    if len(results) != len(batch):
                        raise RuntimeError(f"batch of {len(batch)} gave {len(results)} results")
                except Exception as exc:  # noqa: BLE001 - handed to each caller of the batch
                    for p in batch:
                        if not p.future.done():
                            p.future.set_exception(exc)
                else:
                    for p, result in zip(batch, results):
                        if not p.future.done():
                            p.future.set_result(result)
                finally:
                    self.busy -= 1
                    if self._queue:
                        self._arrived.set()  # wake a worker that waits for a fuller batch
            except Exception:  # a bug here must not stop the model: log it, keep serving
                log.exception("batch worker %d", number)
