"""Where the throughput work (decode, VAD, speaker embeddings) sits among the box's threads."""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def lower_priority(nice: int, idle: bool = False) -> None:
    """This thread, and the threads it starts from now on (the decode threads), to ``nice``;
    with ``idle``, to SCHED_IDLE as well.

    Decoding takes whatever CPU is left; the API, Preprocessor and JobWorker come first, so
    health and status calls stay fast while the models are saturated. Nice 19 still takes
    slices from ordinary processes (a waking process waits out the running decode's slice);
    SCHED_IDLE gives way to any of them at once. Throughput is unchanged: the cores stay busy.
    """
    if nice:
        os.nice(nice)
    if idle:
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except (AttributeError, OSError) as exc:  # not Linux, or refused: nice alone
            log.warning("cannot run the decode threads as SCHED_IDLE (%s); nice %s only", exc, nice)
