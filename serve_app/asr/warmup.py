"""Warm-up at start: a replica does its first real work on bundled speech before it says it
is ready, so the first requests after a start or a scale-up run at steady speed.

A cold Transcriber pays on each decode thread's first call for CTranslate2's set-up, a cold
Preprocessor for PyAV's codec set-up and the VAD's first ONNX runs: the first c16 pass after
`make run` ran at 23x real time against 38-44x for the next ones (#19). Most of a cold
Transcriber's first call was importing torch for the mel features (2.3 s), which the model's
load does now; what is left is a short decode per thread (measured: CTranslate2's first decode
of a batch of 4 windows took 2.42 s, the next 2.39 s, so every batch shape need not be warmed).
Serve marks a replica RUNNING only when its constructor has returned, so work done there is
done before the replica takes traffic, and before /api/v1/ready says yes.
The Ingress then sends the same speech through its own path to each model (its handles'
routers set up: deployments/ingress.py, RayBackend.start_warmup) before it says ready.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from serve_app.audio.decode import decode
from serve_app.audio.pieces import SAMPLE_RATE, Chunk, PreparedAudio
from serve_app.core.transcript import DecodeOptions

log = logging.getLogger("speechtotext")

# 4.5 s of speech ("The birch canoe slid on the smooth planks..."), mp3: a decoder and a
# container that uploads use.
SPEECH = Path(__file__).resolve().parents[1] / "assets" / "warmup.mp3"


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


def warm_engine(engine, multilingual: bool, workers: int = 1) -> float:
    """Decode the bundled speech once on each of the engine's ``workers`` at once (and detect its
    language, on a multilingual model); returns the seconds it took."""
    started = time.perf_counter()
    samples = decode(speech())
    duration = samples.size / SAMPLE_RATE
    piece = PreparedAudio(samples=samples, duration=duration, chunks=[Chunk(0.0, duration)])
    options = DecodeOptions(language="en")
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda _: engine.transcribe_many([(piece, options)]), range(workers)))
    if multilingual:
        engine.detect_language(samples)
    took = time.perf_counter() - started
    log.info("%s warmed in %.2f s", getattr(engine, "name", "the model"), took)
    return took
