"""One model's side of a transcription: language detection, and the pieces of many requests
decoded together.

``ModelRunner`` holds a ``WhisperEngine`` and the ``DecodeBatcher`` that feeds it the pieces of
many requests at once. The Transcriber deployment holds one and forwards to it; ``LocalBackend``
runs the same class in its process, so tests exercise the code production runs.
"""

from __future__ import annotations

import asyncio

from pydantic import BaseModel, ConfigDict, Field

from serve_app.asr.catalog import ModelCatalog
from serve_app.asr.decode_batcher import DecodeBatcher
from serve_app.asr.engine import WhisperEngine
from serve_app.asr.packing import window_load
from serve_app.audio.pieces import PreparedAudio
from serve_app.core.settings import Settings
from serve_app.core.transcript import DecodeOptions, Transcript


class DecodeLimits(BaseModel):
    """How the batcher forms batches; the Transcriber's ``user_config``, changeable live."""

    model_config = ConfigDict(extra="forbid")

    max_batch_size: int = Field(16, ge=1, description="30 s windows of speech a model worker takes at once.")
    batch_wait_timeout_s: float = Field(
        0.05, ge=0, description="How long a free worker waits for a fuller batch beside a busy one."
    )
    decode_batch_size: int = Field(4, ge=1, description="Windows per CTranslate2 generate call.")


class ModelRunner:
    """One model's requests, batched across requests; results per request, whole or streamed."""

    def __init__(self, engine: WhisperEngine, limits: DecodeLimits):
        self.engine = engine
        self.batcher: DecodeBatcher[tuple[PreparedAudio, DecodeOptions], Transcript] = DecodeBatcher(
            engine.transcribe_many,
            size=lambda item: window_load(item[0]),
            workers=engine.workers,
            max_size=limits.max_batch_size,
            wait_s=limits.batch_wait_timeout_s,
            coming=lambda item: item[0].preparing,
            urgent=lambda item: item[0].interactive,
        )
        self.set_limits(limits)

    def set_limits(self, limits: DecodeLimits) -> None:
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


def load_runner(
    settings: Settings, catalog: ModelCatalog, model: str, *, cpu_threads: int, workers: int, limits=None
) -> ModelRunner:
    """``model`` loaded for ``settings`` (device, compute type, alignment, packing), batched."""
    from serve_app.asr.alignment import Aligner
    from serve_app.asr.guards import SpeechGuards

    limits = limits or DecodeLimits()
    engine = WhisperEngine(
        catalog.resolve(model),
        multilingual=catalog.get(model).multilingual,
        device=settings.resolved_device,
        compute_type=settings.resolved_compute_type,
        cpu_threads=cpu_threads,
        num_workers=workers,
        decode_batch_size=limits.decode_batch_size,
        aligner=Aligner(settings.align_models, settings.resolved_device) if settings.align_models else None,
        pack=settings.pack_short_chunks,
        name=model,
        guards=SpeechGuards() if settings.speech_guards else None,
    )
    return ModelRunner(engine, limits)
