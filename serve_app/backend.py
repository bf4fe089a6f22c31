"""Where the service sends audio: a TranscriptionBackend.

``RayBackend`` (deployments/ingress.py) streams through the Preprocessor deployment, which sends
the pieces to the Transcriber deployments; ``LocalBackend`` runs the same pipeline
(serve_app.pipeline.run) over the same library classes in this process, for tests and tools.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Protocol

from serve_app.autoselect import ModelChoice
from serve_app.catalog import ModelCatalog
from serve_app.pipeline import BlobSource, Burst, Finished, Part, run
from serve_app.preprocess import AudioPreprocessor, PrepareOptions
from serve_app.settings import Settings
from serve_app.transcript import DecodeOptions, DiarizeOptions


class TranscriptionBackend(Protocol):
    def transcribe(
        self,
        source: bytes | BlobSource,
        target: str | ModelChoice,
        options: DecodeOptions,
        prepare: PrepareOptions,
        speakers: DiarizeOptions | None = None,
    ) -> AsyncIterator[Part | Finished]:
        """serve_app.pipeline.run's parts, each as soon as it is transcribed, then Finished
        (with who spoke when, if ``speakers`` asks for it)."""
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
    """Everything in one process; models load on first use. ``blobs`` (a BlobStore) is where
    stored audio (``BlobSource``) is read from."""

    def __init__(self, settings: Settings, catalog: ModelCatalog, blobs=None):
        self.settings = settings
        self.catalog = catalog
        self.blobs = blobs
        self.preprocessor = AudioPreprocessor(settings.vad_method, settings.max_audio_seconds)
        self.burst = Burst()
        self._transcribers: dict = {}
        self._model_lock = threading.Lock()  # a model loads once, however many ask at once
        self._speaker_model = None

    def _load(self, model: str):
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

    def _open_blob(self, key: str):
        if self.blobs is None:
            raise RuntimeError("this LocalBackend has no BlobStore to read stored audio from")
        return self.blobs.open_read(key)

    def unavailable(self) -> set[str]:
        return set()  # loaded in this process on first use

    async def not_ready(self) -> list[str]:
        return []

    async def available(self, model: str) -> bool:
        return True

    def _diarizer(self):
        from serve_app.diarize import LocalDiarizer

        with self._model_lock:
            if self._speaker_model is None:
                self._speaker_model = LocalDiarizer(self.settings.resolved_device)
            return self._speaker_model

    async def transcribe(self, source, target, options, prepare, speakers=None) -> AsyncIterator[Part | Finished]:
        models = {m for m in ([target] if isinstance(target, str) else [m for m, _ in target.served])}
        for model in models:
            await asyncio.to_thread(self._load, model)
        loaded = {m: self._transcribers[m] for m in models}
        diarizer = await asyncio.to_thread(self._diarizer) if speakers is not None else None
        async for item in run(
            self.preprocessor,
            source,
            self._open_blob,
            loaded.__getitem__,
            target,
            options,
            prepare,
            self.burst,
            diarizer=diarizer,
            speakers=speakers,
        ):
            yield item
