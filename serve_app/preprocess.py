"""The Preprocessor's work: bytes in, decoded 16 kHz samples and <=30 s speech chunks out."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
from dataclasses import dataclass

from serve_app.audio import SAMPLE_RATE, PreparedAudio, decode, merge_into_chunks, normalize, plausible_seconds
from serve_app.vad import VoiceActivityDetector, load_vad


@dataclass(frozen=True)
class PrepareOptions:
    normalize: bool = True
    vad: bool = True


class AudioPreprocessor:
    """Decode, normalize and cut one upload; heavy but stateless apart from the VAD model."""

    def __init__(self, vad_method: str = "silero", max_audio_seconds: float | None = None):
        self.vad: VoiceActivityDetector = load_vad(vad_method)
        self.max_audio_seconds = max_audio_seconds

    def prepare(self, data: bytes, options: PrepareOptions = PrepareOptions()) -> PreparedAudio:
        samples = decode(data, max_seconds=self.max_audio_seconds)
        if options.normalize:
            samples = normalize(samples)
        duration = samples.size / SAMPLE_RATE
        if options.vad:
            chunks = merge_into_chunks(self.vad.speech(samples))
        else:
            chunks = merge_into_chunks([(t, min(t + 30.0, duration)) for t in range(0, int(duration + 0.999), 30)])
        return PreparedAudio(samples=samples, duration=duration, chunks=chunks)


class DecodeBudget:
    """Bounds the decoded audio one process holds at once (the Preprocessor's memory).

    Each upload reserves the most it may decode to (its size's ``plausible_seconds``, capped at
    the service's longest audio) before it is decoded, and gives it back after; an upload that
    does not fit waits for others to finish. One upload alone always fits. When the last one
    ends, freed memory is handed back to the system (glibc keeps freed heap otherwise).
    """

    def __init__(self, seconds: float, max_audio_seconds: float):
        self.max_audio_seconds = max_audio_seconds
        self.seconds = max(seconds, max_audio_seconds)
        self.reserved = 0.0
        self._changed: asyncio.Condition | None = None

    def cost(self, size: int) -> float:
        return min(plausible_seconds(size), self.max_audio_seconds)

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
            # Once idle, and after the result has left (Ray copies it out when the call returns).
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
