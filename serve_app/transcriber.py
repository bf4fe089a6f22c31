"""One model's side of a transcription: language detection and the pieces of many requests, batched.

``BatchedTranscriber`` holds a ``WhisperEngine`` and the ``PullBatcher`` that feeds it the
pieces of many requests at once. The Transcriber deployment holds one and forwards to it;
``LocalBackend`` runs the same class in-process, so tests exercise the code production runs.
"""

from __future__ import annotations

import asyncio

from pydantic import BaseModel, ConfigDict, Field

from serve_app.audio import PreparedAudio
from serve_app.batching import PullBatcher
from serve_app.engine import WhisperEngine
from serve_app.packing import window_load
from serve_app.transcript import DecodeOptions, Transcript


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

    @property
    def multilingual(self) -> bool:
        return self.engine.multilingual

    async def detect_language(self, piece: PreparedAudio) -> tuple[str, float]:
        """The language of a recording, from its first piece (multilingual models only)."""
        return await asyncio.to_thread(self.engine.detect_language, piece.chunk_samples(piece.chunks[0]))

    async def transcribe_piece(self, piece: PreparedAudio, options: DecodeOptions) -> Transcript:
        """One piece (a <= 30 s chunk of speech) of a recording, batched with whatever else is
        queued: pieces of other requests, and the other pieces of the same long one, so that
        a long request never starves short ones and all model workers decode it at once.
        Times come back relative to the piece."""
        return await self.batcher.submit((piece, options))

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
