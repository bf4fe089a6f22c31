"""Warm-up at start: a replica does its first real work on bundled speech before it says it
is ready, so the first requests after a start or a scale-up run at steady speed.

A cold Transcriber pays on its first calls for CTranslate2's buffers at each batch shape (and
the allocator's first page faults), a cold Preprocessor for PyAV's codec set-up and the VAD's
first ONNX runs: the first c16 pass after `make run` ran at 23x real time against 38-44x for
the next ones (#19). Serve marks a replica RUNNING only when its constructor has returned, so
work done there is done before the replica takes traffic, and before /api/v1/ready says yes.
The Ingress then sends the same speech through its own path to each model (its handles'
routers set up: deployments/ingress.py, RayBackend.start_warmup) before it says ready.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from serve_app.audio import SAMPLE_RATE, Chunk, PreparedAudio, decode
from serve_app.transcript import DecodeOptions

log = logging.getLogger("speechtotext")

# 4.5 s of speech ("The birch canoe slid on the smooth planks..."), mp3: a decoder and a
# container that uploads use.
SPEECH = Path(__file__).with_name("assets") / "warmup.mp3"


def speech() -> bytes:
    return SPEECH.read_bytes()


def warm_preprocessor(pre) -> float:
    """Decode, normalize, VAD and cut the bundled speech the way uploads are (a stream and a
    whole file); returns the seconds it took."""
    started = time.perf_counter()
    stream = pre.open(speech())
    try:
        while stream.next_piece() is not None:
            pass
    finally:
        stream.close()
    pre.prepare(speech())
    took = time.perf_counter() - started
    log.info("preprocessor warmed in %.2f s", took)
    return took


def warm_engine(engine, batch_sizes: tuple[int, ...], multilingual: bool, workers: int = 1) -> float:
    """Decode the bundled speech at each batch size the engine will be given, on each of its
    ``workers`` at once (and detect its language, on a multilingual model); returns the
    seconds it took."""
    started = time.perf_counter()
    samples = decode(speech())
    # Tiled to ~23 s: pieces too long to be packed two to a 30 s window, so a batch of n pieces
    # is a decode of n windows.
    samples = np.tile(samples, int(np.ceil(22.0 * SAMPLE_RATE / samples.size)))
    duration = samples.size / SAMPLE_RATE
    piece = PreparedAudio(samples=samples, duration=duration, chunks=[Chunk(0.0, duration)])
    options = DecodeOptions(language="en")
    sizes = sorted(set(batch_sizes))

    def decode_each_size(_) -> None:
        for size in sizes:
            engine.transcribe_many([(piece, options)] * size)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(decode_each_size, range(workers)))
    if multilingual:
        engine.detect_language(samples)
    took = time.perf_counter() - started
    log.info("%s warmed in %.2f s (batches of %s)", getattr(engine, "name", "the model"), took, sizes)
    return took
