"""The Preprocessor deployment (decode, normalize, VAD) and the options it is deployed with."""

from __future__ import annotations

import asyncio
import os

from ray import serve
from ray.serve import Application

from deployments.profiles import PreprocessorProfile
from serve_app.audio import PreparedAudio
from serve_app.preprocess import PrepareOptions
from serve_app.settings import Settings


@serve.deployment
class Preprocessor:
    """Decode, normalize and VAD; CPU work in a thread so the replica keeps answering."""

    def __init__(self, settings: dict, nice: int = 0):
        from serve_app.preprocess import AudioPreprocessor, DecodeBudget

        if nice:
            os.nice(nice)  # this thread and the decode threads it starts: see Transcriber
        cfg = Settings(**settings)
        self.pre = AudioPreprocessor(cfg.vad_method, cfg.max_audio_seconds)
        self.budget = DecodeBudget(cfg.preprocess_memory_seconds, cfg.max_audio_seconds)
        self._working = 0

    async def prepare(self, data: bytes, options: PrepareOptions) -> PreparedAudio:
        self._working += 1
        try:
            async with self.budget.hold(len(data)):
                prepared = await asyncio.to_thread(self.pre.prepare, data, options)
        finally:
            self._working -= 1
        prepared.preparing = self._working  # the rest of a burst, still on its way
        return prepared


def preprocessor_deployment(profile: PreprocessorProfile, settings: Settings) -> Application:
    return Preprocessor.options(**profile.serve_options()).bind(settings.model_dump(mode="json"), profile.nice)
