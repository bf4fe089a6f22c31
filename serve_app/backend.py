"""Where the service sends audio: a TranscriptionBackend.

``RayBackend`` (deployments/ingress.py) calls the Preprocessor and Transcriber deployments
through handles; ``LocalBackend`` runs the same library classes (``AudioPreprocessor``,
``BatchedTranscriber``) in this process, for tests and tools.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Protocol

from serve_app.catalog import ModelCatalog
from serve_app.preprocess import AudioPreprocessor, PrepareOptions
from serve_app.settings import Settings
from serve_app.transcript import DecodeOptions, Transcript


class TranscriptionBackend(Protocol):
    async def transcribe(
        self, audio: bytes, model: str, options: DecodeOptions, prepare: PrepareOptions
    ) -> Transcript: ...

    def transcribe_stream(
        self, audio: bytes, model: str, options: DecodeOptions, prepare: PrepareOptions
    ) -> AsyncIterator[Transcript]:
        """The transcript in consecutive parts, each as soon as it is decoded."""
        ...

    def unavailable(self) -> set[str]:
        """Models that cannot transcribe right now (no replica runs), as last seen."""
        ...

    async def available(self, model: str) -> bool:
        """Whether ``model`` can transcribe now (checked again if it seemed not to); sync
        requests for one that cannot are refused with 503 at once instead of waiting."""
        ...


def load_transcriber(
    settings: Settings, catalog: ModelCatalog, model: str, *, cpu_threads: int, workers: int, limits=None
):
    """A model loaded for ``settings`` (device, compute type, alignment, packing), batched."""
    from serve_app.alignment import Aligner
    from serve_app.engine import WhisperEngine
    from serve_app.transcriber import BatchedTranscriber, BatchLimits

    limits = limits or BatchLimits()
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
    )
    return BatchedTranscriber(engine, limits)


class LocalBackend:
    """Everything in one process; models load on first use."""

    def __init__(self, settings: Settings, catalog: ModelCatalog):
        self.settings = settings
        self.catalog = catalog
        self._preprocessor: AudioPreprocessor | None = None
        self._transcribers: dict = {}
        self._model_lock = threading.Lock()  # a model loads once, however many ask at once
        self._vad_lock = threading.Lock()

    def _transcriber(self, model: str):
        with self._model_lock:
            if model not in self._transcribers:
                self._transcribers[model] = load_transcriber(
                    self.settings,
                    self.catalog,
                    model,
                    cpu_threads=self.settings.cpu_threads or 2,
                    workers=self.settings.model_workers or 1,
                )
            return self._transcribers[model]

    def _prepare(self, audio: bytes, prepare: PrepareOptions):
        with self._vad_lock:
            if self._preprocessor is None:
                self._preprocessor = AudioPreprocessor(self.settings.vad_method, self.settings.max_audio_seconds)
        return self._preprocessor.prepare(audio, prepare)

    def unavailable(self) -> set[str]:
        return set()  # loaded in this process on first use

    async def available(self, model: str) -> bool:
        return True

    async def transcribe(self, audio, model, options, prepare) -> Transcript:
        prepared = await asyncio.to_thread(self._prepare, audio, prepare)
        transcriber = await asyncio.to_thread(self._transcriber, model)
        return await transcriber.transcribe(prepared, options)

    async def transcribe_stream(self, audio, model, options, prepare) -> AsyncIterator[Transcript]:
        prepared = await asyncio.to_thread(self._prepare, audio, prepare)
        transcriber = await asyncio.to_thread(self._transcriber, model)
        async for part in transcriber.stream(prepared, options):
            yield part
