"""The Diarizer deployment: speaker embeddings of the pieces of recordings that ask for
``diarize=true``, batched across requests, and who spoke when at the end of each recording.

Requests that do not ask for diarization never reach it. The encoder (resemblyzer's, weights
in its wheel) runs on the GPU in the gpu profile (its ``num_gpus``), on the CPU otherwise.
"""

from __future__ import annotations

import asyncio

from ray import serve
from ray.serve import Application

from deployments.priority import lower_priority
from deployments.profiles import DiarizerProfile
from serve_app.audio.pieces import PreparedAudio
from serve_app.core.settings import Settings
from serve_app.core.transcript import DiarizeOptions


@serve.deployment
class Diarizer:
    def __init__(self, *, settings: dict, nice: int = 0, max_batch_size: int = 16, idle: bool = False):
        from serve_app.diarization.encoder import SpeakerEncoder

        lower_priority(nice, idle)
        cfg = Settings(**settings)
        self.encoder = SpeakerEncoder(cfg.resolved_device)
        self.embed_batch.set_max_batch_size(max_batch_size)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.02)
    async def embed_batch(self, pieces: list[PreparedAudio]):
        """The pieces of concurrent recordings through the encoder in shared batches."""
        return await asyncio.to_thread(self.encoder.embed_many, [(p.samples, p.offset) for p in pieces])

    async def embed(self, piece: PreparedAudio):
        return await self.embed_batch(piece)

    async def diarize(self, windows, options: DiarizeOptions):
        from serve_app.diarization.encoder import run

        return await asyncio.to_thread(run, self.encoder, windows, options)


def diarizer_deployment(profile: DiarizerProfile, settings: Settings) -> Application:
    return Diarizer.options(**profile.serve_options()).bind(
        settings=settings.replica_args(),
        nice=profile.nice,
        max_batch_size=profile.max_batch_size,
        idle=profile.idle,
    )
