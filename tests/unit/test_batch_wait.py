"""When the Transcriber's serve batch waits to fill (``Transcriber._batch_size``).

Serve closes a batch when the size function says it is full or after batch_wait_timeout_s;
the size function is tested directly (no model: the method only reads the batch state).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from deployments.app import Transcriber
from serve_app.audio import Chunk, PreparedAudio
from serve_app.engine import DecodeOptions

batch_size = Transcriber.func_or_class._batch_size


def short_request() -> tuple[PreparedAudio, DecodeOptions]:
    audio = PreparedAudio(samples=np.zeros(16000 * 5, np.float32), duration=5.0, chunks=[Chunk(0.0, 5.0)])
    return audio, DecodeOptions()


def test_idle_model_counts_a_batch_as_full_so_it_starts_at_once():
    idle = SimpleNamespace(_decoding=0, max_batch_size=4)
    assert batch_size(idle, [short_request()]) == 4


def test_busy_model_counts_windows_so_the_batch_waits_for_more():
    busy = SimpleNamespace(_decoding=1, max_batch_size=4)
    assert batch_size(busy, [short_request()]) == 1  # a 5 s chunk: a share of one window
    # six 5 s requests still share two windows; the limit is what stops the batch
    assert batch_size(busy, [short_request() for _ in range(6)]) == 2
    assert batch_size(busy, [short_request() for _ in range(30)]) > 4
