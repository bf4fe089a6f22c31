"""How the Transcriber forms its cross-request batches (``serve_app.asr.decode_batcher.DecodeBatcher``).

Plain asyncio, no model: ``run`` is a function that records the batches it gets (and can be
held, like a decode in progress). The model side of batching (requests sharing decode calls,
each getting its own text) is tested against the real service in tests/serve.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

import pytest

from serve_app.asr.decode_batcher import DecodeBatcher, _Pending


class Recorder:
    """A batch function: returns each item doubled; ``hold`` keeps it inside a batch."""

    def __init__(self):
        self.batches: list[list[int]] = []
        self.hold = threading.Event()
        self.hold.set()
        self.inside = threading.Event()

    def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        self.inside.set()
        self.hold.wait(10)
        if any(i < 0 for i in items):
            raise ValueError("negative item")
        return [2 * i for i in items]


async def until(event: threading.Event) -> None:
    await asyncio.to_thread(event.wait, 10)


def batcher(
    run, *, workers=1, max_size=4.0, wait_s=0.05, size=lambda item: 1.0, coming=None, urgent=None
) -> DecodeBatcher:
    return DecodeBatcher(
        run, size=size, workers=workers, max_size=max_size, wait_s=wait_s, coming=coming, urgent=urgent
    )


@contextlib.contextmanager
def queued(sizes: list[float], workers=2, max_size=4.0):
    """A batcher whose workers have not started, items 0, 1, ... of ``sizes`` in its queue:
    for asking ``_take`` what one worker would take."""
    b = batcher(Recorder(), workers=workers, max_size=max_size)
    loop = asyncio.new_event_loop()
    try:
        for n, size in enumerate(sizes):
            b._queue.append(_Pending(n, size, loop.create_future()))
        yield b
    finally:
        loop.close()


async def busy(first_item=1, **options) -> tuple[Recorder, DecodeBatcher, asyncio.Future]:
    """A batcher whose first worker is held inside a batch of ``[first_item]``."""
    run = Recorder()
    b = batcher(run, **options)
    run.hold.clear()
    first = asyncio.ensure_future(b.submit(first_item))
    await until(run.inside)
    return run, b, first


async def test_a_lone_request_on_an_idle_model_starts_at_once():
    run = Recorder()
    b = batcher(run, wait_s=30)  # a wait would show as a timeout below
    assert await asyncio.wait_for(b.submit(3), 5) == 6
    assert run.batches == [[3]]


async def test_on_an_idle_model_the_start_of_a_burst_waits_for_the_rest_of_it():
    # Items 1 and 2 arrive saying more are being prepared; 3 says it is the last.
    run = Recorder()
    b = batcher(run, max_size=8, wait_s=0.5, coming=lambda item: 3 - item)
    tasks = []
    for item in (1, 2, 3):
        tasks.append(asyncio.ensure_future(b.submit(item)))
        await asyncio.sleep(0.05)
    assert await asyncio.gather(*tasks) == [2, 4, 6]
    assert run.batches == [[1, 2, 3]]  # one batch, not [1] alone and then [2, 3]


async def test_a_burst_that_stops_coming_is_decoded_after_wait_s():
    run = Recorder()
    b = batcher(run, wait_s=0.1, coming=lambda item: 5)  # says five more, none comes
    started = asyncio.get_running_loop().time()
    assert await asyncio.wait_for(b.submit(1), 5) == 2
    assert 0.1 <= asyncio.get_running_loop().time() - started < 2
    assert run.batches == [[1]]


async def test_requests_that_queue_while_the_model_is_busy_share_the_next_batch():
    run, b, first = await busy(max_size=8, wait_s=0)  # the only worker now decodes [1]
    rest = [asyncio.ensure_future(b.submit(i)) for i in (2, 3, 4)]
    await asyncio.sleep(0.2)  # longer than any batch timer: nothing closes a batch early
    assert run.batches == [[1]]
    run.hold.set()
    assert await first == 2 and await asyncio.gather(*rest) == [4, 6, 8]
    assert run.batches == [[1], [2, 3, 4]]  # formed when the worker came free


async def test_urgent_items_go_ahead_of_queued_ones_in_the_order_they_came():
    """A sync request's pieces (urgent: odd numbers here) decode before queued jobs' pieces
    that were there first; among themselves, and among the others, first come first."""
    run, b, first = await busy(max_size=2, wait_s=0, urgent=lambda item: item % 2 == 1)
    rest = [asyncio.ensure_future(b.submit(i)) for i in (2, 4, 6, 3, 8, 5)]
    await asyncio.sleep(0)  # all queued while the worker holds [1]
    run.hold.set()
    await first
    await asyncio.gather(*rest)
    # The urgent ones in a batch of their own; then, callers having just waited, the queued
    # ones a window at a time (a worker free again soon for the next caller).
    assert run.batches == [[1], [3, 5], [2], [4], [6], [8]]


async def test_an_urgent_batch_is_not_filled_up_with_queued_items(monkeypatch):
    """Room for four, but the sync request's piece goes alone: filled up with a job's pieces it
    would wait for their decode too. Once no caller has waited for a while, the queued items
    share batches again."""
    monkeypatch.setattr("serve_app.asr.decode_batcher.URGENT_RECENT_S", 0.0)  # "a while": at once
    run, b, first = await busy(max_size=4, wait_s=0, urgent=lambda item: item % 2 == 1)
    rest = [asyncio.ensure_future(b.submit(i)) for i in (2, 4, 3, 6)]
    await asyncio.sleep(0)
    run.hold.set()
    await first
    await asyncio.gather(*rest)
    assert run.batches == [[1], [3], [2, 4, 6]]


async def test_while_a_callers_piece_decodes_queued_items_go_a_window_at_a_time(monkeypatch):
    """However long the caller's piece takes (here: held, and no recency window at all), the
    other worker takes one queued item at a time: free again soon for the caller's next one."""
    monkeypatch.setattr("serve_app.asr.decode_batcher.URGENT_RECENT_S", 0.0)
    run, b, first = await busy(workers=2, max_size=4, wait_s=0, urgent=lambda item: item % 2 == 1)
    rest = [asyncio.ensure_future(b.submit(i)) for i in (2, 4, 6)]
    deadline = asyncio.get_running_loop().time() + 10
    while len(run.batches) < 2:  # the second worker takes its batch (after its grace)
        assert asyncio.get_running_loop().time() < deadline, run.batches
        await asyncio.sleep(0.01)
    assert run.batches == [[1], [2]]
    run.hold.set()
    await first
    assert await asyncio.gather(*rest) == [4, 8, 12]


async def test_a_batch_never_holds_more_than_max_size():
    run, b, first = await busy(0, max_size=2)
    rest = [asyncio.ensure_future(b.submit(i)) for i in range(1, 6)]
    await asyncio.sleep(0)
    run.hold.set()
    assert await asyncio.gather(first, *rest) == [0, 2, 4, 6, 8, 10]  # each its own result
    assert run.batches == [[0], [1, 2], [3, 4], [5]]


async def test_a_failing_batch_fails_its_own_requests_only():
    run, b, first = await busy(max_size=8, wait_s=0)
    bad = [asyncio.ensure_future(b.submit(i)) for i in (2, -1)]
    await asyncio.sleep(0)
    run.hold.set()
    assert await first == 2
    for task in bad:
        with pytest.raises(ValueError, match="negative item"):
            await task
    assert await b.submit(5) == 10  # the worker is still serving


async def test_a_request_cancelled_while_queued_is_not_decoded():
    run, b, first = await busy(max_size=8, wait_s=0)
    gone, kept = asyncio.ensure_future(b.submit(2)), asyncio.ensure_future(b.submit(3))
    await asyncio.sleep(0)
    gone.cancel()  # a streaming client went away
    run.hold.set()
    assert await first == 2 and await kept == 6
    assert run.batches == [[1], [3]]


async def test_a_worker_that_comes_free_beside_a_busy_one_waits_briefly_for_a_fuller_batch():
    run, b, first = await busy(workers=2, max_size=4, wait_s=0.3)  # worker 1 busy, worker 2 idle
    second = asyncio.ensure_future(b.submit(2))
    await asyncio.sleep(0.05)
    third = asyncio.ensure_future(b.submit(3))  # within worker 2's wait: same batch
    await asyncio.sleep(0.5)  # worker 2 took [2, 3] after its wait; worker 1 still decodes
    run.hold.set()
    assert await asyncio.gather(first, second, third) == [2, 4, 6]
    assert run.batches == [[1], [2, 3]]


def test_idle_workers_share_the_queue_so_a_long_request_decodes_on_all_of_them():
    with queued([1.0] * 4) as b:  # four 30 s chunks of one long request, both workers idle
        assert [p.item for p in b._take()] == [0, 1]  # this worker's half
        b.busy = 1
        assert [p.item for p in b._take()] == [2, 3]  # the other worker's


def test_idle_workers_split_a_few_short_requests_between_them():
    with queued([0.2] * 4) as b:  # four 5 s requests, 0.8 window: less than a window per worker
        assert [p.item for p in b._take()] == [0, 1]  # half for this worker ...
        b.busy = 1
        assert [p.item for p in b._take()] == [2, 3]  # ... half for the other, side by side


def test_beside_a_busy_worker_a_batch_takes_whole_windows_and_leaves_the_rest_to_the_next():
    with queued([0.2] * 9) as b:  # nine 5 s requests: a share of 0.2 window each, 1.8 windows
        b.busy, b._coming = 1, 2  # more requests are on their way
        assert [p.item for p in b._take()] == [0, 1, 2, 3, 4]  # one full window
        assert b.queued == 4  # they open the next batch, the arrivals fill it


def test_with_nothing_more_coming_a_batch_takes_all_that_fits():
    with queued([0.2] * 9) as b:
        b.busy, b._coming = 1, 0  # the end of a burst: no one to fill a partial window later
        assert [p.item for p in b._take()] == list(range(9))


def test_limits_are_checked():
    with pytest.raises(ValueError):
        batcher(Recorder(), max_size=0)
    with pytest.raises(ValueError):
        batcher(Recorder(), wait_s=-1)
