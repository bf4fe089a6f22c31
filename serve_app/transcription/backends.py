"""Where the service sends audio: a TranscriptionBackend, which hosts the one ``Pipeline``.

``RayBackend`` (deployments/ingress.py) streams through the Preprocessor deployment, whose
``Pipeline`` sends the pieces to the Transcriber and Diarizer deployments; ``LocalBackend``
holds the same ``Pipeline`` over models loaded in this process (``LocalModels``), for tests and
tools: the same checks, the same budget, the same code.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Protocol

from serve_app.asr.autoselect import ModelChoice
from serve_app.asr.catalog import ModelCatalog
from serve_app.audio.pieces import PreparedAudio
from serve_app.audio.preprocess import AudioPreprocessor, DecodeBudget, PrepareOptions
from serve_app.core.settings import Settings
from serve_app.core.transcript import DecodeOptions, DiarizeOptions, Transcript
from serve_app.diarization.speakers import Diarization, Windows
from serve_app.transcription.pipeline import BlobReader, BlobSource, Finished, Part, Pipeline


class TranscriptionBackend(Protocol):
    def transcribe(
        self,
        source: bytes | BlobSource,
        target: str | ModelChoice,
        options: DecodeOptions,
        prepare: PrepareOptions,
        speakers: DiarizeOptions | None = None,
    ) -> AsyncIterator[Part | Finished]:
        """``Pipeline.run``'s parts, each as soon as it is transcribed, then Finished (with who
        spoke when, if ``speakers`` asks for it)."""
        ...

    def unavailable(self) -> set[str]:
        """Models that cannot transcribe right now (no replica runs), as last seen."""
        ...

    async def not_ready(self) -> list[str]:
        """The models and parts (the preprocessor) with no running, warmed replica yet, asked
        now; empty when everything can take requests."""
        ...

    async def available(self, model: str) -> bool:
        """Whether ``model`` can transcribe now (checked again if it seemed not to); sync
        requests for one that cannot are refused with 503 at once instead of waiting."""
        ...

    def problems(self) -> list[str]:
        """What keeps this backend from knowing its models' state (empty when nothing does)."""
        ...


class _Loaded:
    """Something slow to load, loaded once on first use (in a thread), however many ask at once."""

    def __init__(self, load):
        self._load = load
        self._value = None
        self._lock = threading.Lock()

    def get(self):
        with self._lock:
            if self._value is None:
                self._value = self._load()
            return self._value

    async def ready(self):
        return self._value if self._value is not None else await asyncio.to_thread(self.get)


class LocalModel:
    """A served model in this process, as the pipeline uses one (PieceTranscriber): a
    ``ModelRunner``, loaded on first use."""

    def __init__(self, settings: Settings, catalog: ModelCatalog, name: str):
        from serve_app.asr.runner import load_runner

        self.name = name
        self.multilingual = catalog.get(name).multilingual
        self._runner = _Loaded(
            lambda: load_runner(
                settings, catalog, name, cpu_threads=settings.cpu_threads or 2, workers=settings.model_workers or 1
            )
        )

    @property
    def runner(self):
        """The loaded ``ModelRunner`` (loads it now, blocking, if it is not yet)."""
        return self._runner.get()

    async def detect_language(self, piece: PreparedAudio) -> tuple[str, float]:
        return await (await self._runner.ready()).detect_language(piece)

    async def transcribe_piece(self, piece: PreparedAudio, options: DecodeOptions) -> Transcript:
        return await (await self._runner.ready()).transcribe_piece(piece, options)


class LocalSpeakers:
    """The diarizer in this process, as the pipeline uses one (PieceDiarizer), loaded on first use."""

    def __init__(self, device: str):
        from serve_app.diarization.encoder import LocalDiarizer

        self._diarizer = _Loaded(lambda: LocalDiarizer(device))

    async def embed(self, piece: PreparedAudio) -> Windows:
        return await (await self._diarizer.ready()).embed(piece)

    async def diarize(self, windows: Windows, options: DiarizeOptions) -> Diarization:
        return await (await self._diarizer.ready()).diarize(windows, options)


class LocalModels:
    """The served models and the diarizer, each loaded in this process on first use. The slow
    part of a ``LocalBackend``, so several may share one (the tests load each model once)."""

    def __init__(self, settings: Settings, catalog: ModelCatalog):
        self.transcribers = {name: LocalModel(settings, catalog, name) for name in settings.models}
        self.diarizer = LocalSpeakers(settings.resolved_device) if settings.diarization else None


class LocalBackend:
    """The ``Pipeline`` in this process. ``blobs`` is where stored audio (``BlobSource``) is read
    from (the job service's BlobStore); ``models`` may be shared with other backends."""

    def __init__(
        self,
        settings: Settings,
        catalog: ModelCatalog,
        blobs: BlobReader | None = None,
        models: LocalModels | None = None,
    ):
        self.settings = settings
        self.models = models or LocalModels(settings, catalog)
        self.pipeline = Pipeline(
            AudioPreprocessor(settings.vad_method, settings.max_audio_seconds),
            self.models.transcribers,
            budget=DecodeBudget(settings.preprocess_memory_seconds, settings.max_audio_seconds),
            blobs=blobs,
            diarizer=self.models.diarizer,
        )

    def unavailable(self) -> set[str]:
        return set()  # loaded in this process on first use

    async def not_ready(self) -> list[str]:
        return []

    async def available(self, model: str) -> bool:
        return True

    def problems(self) -> list[str]:
        return []

    def transcribe(self, source, target, options, prepare, speakers=None) -> AsyncIterator[Part | Finished]:
        return self.pipeline.run(source, target, options, prepare, speakers)
