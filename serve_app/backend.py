"""Where the API sends audio: a TranscriptionBackend.

``RayBackend`` (deployments/) calls the Preprocessor and Transcriber deployments through
handles; ``LocalBackend`` runs the same library code in this process, for tests and tools.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Protocol

from serve_app.alignment import Aligner
from serve_app.catalog import ModelCatalog
from serve_app.engine import DecodeOptions, Transcript, WhisperEngine
from serve_app.preprocess import AudioPreprocessor, PrepareOptions
from serve_app.settings import Settings


class TranscriptionBackend(Protocol):
    async def transcribe(
        self, audio: bytes, model: str, options: DecodeOptions, prepare: PrepareOptions
    ) -> Transcript: ...

    def transcribe_stream(
        self, audio: bytes, model: str, options: DecodeOptions, prepare: PrepareOptions
    ) -> AsyncIterator[Transcript]:
        """The transcript in consecutive parts, each as soon as it is decoded."""
        ...


class LocalBackend:
    """Everything in one process; models load on first use."""

    def __init__(self, settings: Settings, catalog: ModelCatalog):
        self.settings = settings
        self.catalog = catalog
        self._preprocessor: AudioPreprocessor | None = None
        self._engines: dict[str, WhisperEngine] = {}

    def _engine(self, model: str) -> WhisperEngine:
        if model not in self._engines:
            spec = self.catalog.get(model)
            self._engines[model] = WhisperEngine(
                self.catalog.resolve(model),
                multilingual=spec.multilingual,
                device=self.settings.resolved_device,
                compute_type=self.settings.resolved_compute_type,
                cpu_threads=self.settings.cpu_threads or 2,
                aligner=Aligner(self.settings.align_models, self.settings.resolved_device)
                if self.settings.align_models
                else None,
                pack=self.settings.pack_short_chunks,
            )
        return self._engines[model]

    def _prepare(self, audio: bytes, prepare: PrepareOptions):
        if self._preprocessor is None:
            self._preprocessor = AudioPreprocessor(self.settings.vad_method, self.settings.max_audio_seconds)
        return self._preprocessor.prepare(audio, prepare)

    async def transcribe(self, audio, model, options, prepare) -> Transcript:
        prepared = await asyncio.to_thread(self._prepare, audio, prepare)
        engine = await asyncio.to_thread(self._engine, model)
        [result] = await asyncio.to_thread(engine.transcribe_many, [(prepared, options)])
        return result

    async def transcribe_stream(self, audio, model, options, prepare) -> AsyncIterator[Transcript]:
        yield await self.transcribe(audio, model, options, prepare)
