"""The per-request flow of one model: detect the language once, cut into pieces, batch, join, stream.

``BatchedTranscriber`` holds a ``WhisperEngine`` and the ``PullBatcher`` that feeds it the
pieces of many requests at once. The Transcriber deployment holds one and forwards to it;
``LocalBackend`` runs the same class in-process, so tests exercise the code production runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

from pydantic import BaseModel, ConfigDict, Field

from serve_app.audio import PreparedAudio
from serve_app.batching import PullBatcher
from serve_app.engine import WhisperEngine
from serve_app.packing import window_load
from serve_app.transcript import DecodeOptions, Transcript, join


class BatchLimits(BaseModel):
    """How the batcher forms batches; the Transcriber's ``user_config``, changeable live."""

    model_config = ConfigDict(extra="forbid")

    max_batch_size: int = Field(16, ge=1, description="30 s windows of speech a model worker takes at once.")
    batch_wait_timeout_s: float = Field(
        0.05, ge=0, description="How long a free worker waits for a fuller batch beside a busy one."
    )
    decode_batch_size: int = Field(4, ge=1, description="Windows per CTranslate2 generate call.")


class BatchedTranscriber:
    """One model's requests, batched across requests; results per request, whole or streamed."""

    def __init__(self, engine: WhisperEngine, limits: BatchLimits):
        self.engine = engine
        self.batcher: PullBatcher[tuple[PreparedAudio, DecodeOptions], Transcript] = PullBatcher(
            engine.transcribe_many,
            size=lambda item: window_load(item[0]),
            workers=engine.workers,
            max_size=limits.max_batch_size,
            wait_s=limits.batch_wait_timeout_s,
            coming=lambda item: item[0].preparing,
        )
        self.set_limits(limits)

    def set_limits(self, limits: BatchLimits) -> None:
        self.limits = limits
        self.batcher.set_limits(limits.max_batch_size, limits.batch_wait_timeout_s)
        self.engine.decode_batch_size = limits.decode_batch_size

    async def transcribe(self, audio: PreparedAudio, options: DecodeOptions) -> Transcript:
        pieces = await self._start(audio, options)
        return join(list(await asyncio.gather(*pieces)))

    async def stream(self, audio: PreparedAudio, options: DecodeOptions) -> AsyncIterator[Transcript]:
        """The transcript piece by piece, in order, each as soon as it is decoded."""
        pieces = await self._start(audio, options)
        try:
            for piece in pieces:
                yield await piece
        finally:
            for piece in pieces:
                piece.cancel()  # the caller went away: drop what is still queued

    async def _start(self, audio: PreparedAudio, options: DecodeOptions) -> list[asyncio.Future]:
        probability = None
        if options.language is None and self.engine.multilingual and audio.chunks:
            # Once per request, so that all its pieces decode in the same language.
            first = audio.chunk_samples(audio.chunks[0])
            language, probability = await asyncio.to_thread(self.engine.detect_language, first)
            options = replace(options, language=language)
        # A long request is cut into one piece per <= 30 s chunk; pieces queue like any other
        # request, so a long request never starves short ones, never exceeds a batch, and all
        # model workers decode it at once (and its short tail shares a window with others).
        parts = [replace(audio, chunks=[chunk]) for chunk in audio.chunks] or [audio]
        return [asyncio.ensure_future(self._piece(part, options, probability)) for part in parts]

    async def _piece(self, part: PreparedAudio, options: DecodeOptions, probability: float | None) -> Transcript:
        transcript = await self.batcher.submit((part, options))
        return replace(transcript, language_probability=probability)

    def stats(self) -> dict:
        stats = self.engine.stats
        return {
            "decode_calls": stats.decode_calls,
            "chunks": stats.chunks,
            "windows": stats.windows,
            "largest_batch": stats.largest_batch,
            "redecoded": stats.redecoded,
            "requests_per_call": list(stats.requests_per_call),
            "batch_sizes": list(self.batcher.batches),  # in windows, as the batcher counts them
            "queued": self.batcher.queued,
        }
