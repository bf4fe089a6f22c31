"""The Preprocessor's work: an upload or a stored object in, 16 kHz speech pieces (<= 30 s) out.

``AudioPreprocessor.open`` starts a ``PieceStream``: PyAV decodes the file block by block and the
``SpeechChunker`` hands out each piece of speech as soon as it is final, so a long recording's
first pieces are transcribed while the rest still decodes, and memory holds a window of
pieces, never the whole recording. ``prepare`` decodes a whole (short) file at once, for tools.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import threading
from collections import deque
from dataclasses import dataclass
from typing import BinaryIO

from serve_app.audio.chunking import HELD_SECONDS, SpeechChunker, merge_regions
from serve_app.audio.decode import DecodedStream, decode, plausible_seconds
from serve_app.audio.levels import normalize
from serve_app.audio.pieces import MAX_CHUNK_SECONDS, SAMPLE_RATE, PreparedAudio
from serve_app.audio.vad import VoiceActivityDetector, load_vad


@dataclass(frozen=True)
class PrepareOptions:
    normalize: bool = True
    vad: bool = True


class PieceStream:
    """The speech pieces of one recording, in order, as decoding reaches them.

    ``next_piece`` blocks (decoding): call it in a thread. Calls are serialized, and ``close``
    waits for a running one, so a stream closed from another thread is never read half-closed.
    """

    def __init__(self, decoded: DecodedStream, chunker: SpeechChunker, file: BinaryIO | None = None):
        self.decoded = decoded
        self.chunker = chunker
        self._file = file
        self._blocks = decoded.blocks()
        self._ready: deque[PreparedAudio] = deque()
        self._done = False
        self._closed = False
        self._lock = threading.Lock()

    @property
    def declared(self) -> float | None:
        """The duration the container states (None: it states none)."""
        return self.decoded.declared

    @property
    def seconds(self) -> float:
        """Audio decoded so far (all of it, once ``next_piece`` returned None)."""
        return self.decoded.seconds

    def next_piece(self) -> PreparedAudio | None:
        with self._lock:
            if self._closed:
                return None
            while not self._ready and not self._done:
                block = next(self._blocks, None)
                if block is None:
                    self._done = True
                    self._ready.extend(self.chunker.finish())
                else:
                    self._ready.extend(self.chunker.feed(block))
            return self._ready.popleft() if self._ready else None

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._ready.clear()
            self._blocks.close()
            self.decoded.close()
            if self._file is not None:
                self._file.close()


class AudioPreprocessor:
    """Decode, normalize and cut; stateless apart from the VAD model (its ONNX session is
    shared by the threads that decode at once)."""

    def __init__(self, vad_method: str = "silero", max_audio_seconds: float | None = None):
        self.vad: VoiceActivityDetector = load_vad(vad_method)
        self.max_audio_seconds = max_audio_seconds

    def open(self, source: bytes | BinaryIO, options: PrepareOptions = PrepareOptions()) -> PieceStream:
        """Start decoding ``source`` (bytes, or a seekable file object it then owns)."""
        file = None if isinstance(source, (bytes, bytearray, memoryview)) else source
        try:
            decoded = DecodedStream(source, max_seconds=self.max_audio_seconds)
        except BaseException:
            if file is not None:
                file.close()
            raise
        return PieceStream(decoded, SpeechChunker(self.vad if options.vad else None, normalize=options.normalize), file)

    def prepare(self, data: bytes, options: PrepareOptions = PrepareOptions()) -> PreparedAudio:
        """A whole (short) file at once: its samples and its speech chunks."""
        samples = decode(data, max_seconds=self.max_audio_seconds)
        if options.normalize:
            samples = normalize(samples)
        duration = samples.size / SAMPLE_RATE
        if options.vad:
            chunks = merge_regions(self.vad.speech(samples))
        else:
            chunks = merge_regions([(t, min(t + 30.0, duration)) for t in range(0, int(duration + 0.999), 30)])
        return PreparedAudio(samples=samples, duration=duration, chunks=chunks)


# Pieces of one recording on their way to the Transcriber at once (~2 MB each): the pipeline
# sends no more before one comes back.
PIECES_IN_FLIGHT = 8
# What one stream holds at most, in seconds of decoded audio: what the chunker holds, and the
# pieces on their way to the Transcriber.
STREAM_SECONDS = HELD_SECONDS + PIECES_IN_FLIGHT * MAX_CHUNK_SECONDS


class DecodeBudget:
    """Bounds the decoded audio one process holds at once (the Preprocessor's memory).

    Each recording reserves the most it may hold (``STREAM_SECONDS``, less for a file too small
    to decode to that much) before it is decoded, and gives it back after; one that does not
    fit waits for others to finish. When the last one ends, freed memory is handed back to the
    system (glibc keeps freed heap otherwise).
    """

    def __init__(self, seconds: float, max_audio_seconds: float):
        self.max_audio_seconds = max_audio_seconds
        self.seconds = max(seconds, min(max_audio_seconds, STREAM_SECONDS))  # one always fits
        self.reserved = 0.0
        self._changed: asyncio.Condition | None = None

    def cost(self, size: int) -> float:
        return min(plausible_seconds(size), self.max_audio_seconds, STREAM_SECONDS)

    @contextlib.asynccontextmanager
    async def hold(self, size: int):
        cost = self.cost(size)
        if self._changed is None:
            self._changed = asyncio.Condition()
        async with self._changed:
            await self._changed.wait_for(lambda: self.reserved + cost <= self.seconds)
            self.reserved += cost
        try:
            yield cost
        finally:
            async with self._changed:
                self.reserved -= cost
                self._changed.notify_all()
            asyncio.get_running_loop().call_later(1.0, self._trim_if_idle)

    def _trim_if_idle(self) -> None:
        if self.reserved == 0:
            release_free_memory()


def release_free_memory() -> None:
    """Return freed heap pages to the system (glibc's malloc_trim; nothing elsewhere)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
