"""The Preprocessor deployment (decode, normalize, VAD, pieces to the Transcribers) and the
options it is deployed with."""

from __future__ import annotations

from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from deployments.priority import lower_priority
from deployments.profiles import PreprocessorProfile
from serve_app.preprocess import PrepareOptions
from serve_app.settings import Settings
from serve_app.transcript import DecodeOptions


@serve.deployment
class Preprocessor:
    """Streams each recording's speech pieces to its model's Transcriber as they are decoded
    (serve_app.pipeline.run) and its transcript back, piece by piece; CPU work in threads so
    the replica keeps answering. Samples go from here to the Transcriber through the object
    store, never through the Ingress."""

    def __init__(
        self,
        settings: dict,
        transcribers: dict[str, DeploymentHandle],
        nice: int = 0,
        diarizer: DeploymentHandle | None = None,
        idle: bool = False,
    ):
        from deployments.handles import HandleDiarizer, HandleTranscriber
        from serve_app.blobs import BlobStore
        from serve_app.catalog import ModelCatalog
        from serve_app.pipeline import Burst
        from serve_app.preprocess import AudioPreprocessor, DecodeBudget

        lower_priority(nice, idle)  # this thread and the decode threads it starts
        cfg = Settings(**settings)
        catalog = ModelCatalog.load(cfg.catalog_path, cfg.cache_dir)
        self.pre = AudioPreprocessor(cfg.vad_method, cfg.max_audio_seconds)
        if cfg.warmup:  # before Serve marks this replica running (serve_app/warmup.py)
            from serve_app.warmup import warm_preprocessor

            warm_preprocessor(self.pre)
        self.budget = DecodeBudget(cfg.preprocess_memory_seconds, cfg.max_audio_seconds)
        self.blobs = BlobStore.from_settings(cfg)
        self.transcribers = {m: HandleTranscriber(h, catalog.get(m).multilingual) for m, h in transcribers.items()}
        self.burst = Burst()
        self.diarizer = HandleDiarizer(diarizer) if diarizer is not None else None

    def record_autoscaling_stats(self) -> dict[str, float]:
        """Read by deployments.autoscaling.decode_load_policy."""
        return {"decoding": float(self.burst.decoding)}

    async def transcribe(self, source, target, options: DecodeOptions, prepare: PrepareOptions, speakers=None):
        """Streaming: ``serve_app.pipeline.Part`` per piece, then a ``Finished``."""
        from serve_app.blobs import BlobNotFound
        from serve_app.errors import InvalidParameter, ServiceError, UnknownModel
        from serve_app.pipeline import BlobSource, run

        try:
            size = len(source) if not isinstance(source, BlobSource) else await self.blobs.size(source.key)
        except BlobNotFound:
            raise ServiceError(
                f"The job's audio ({source.key}) is missing from storage.", code="audio_missing"
            ) from None

        def transcriber(model: str):
            if model not in self.transcribers:
                raise UnknownModel(f"Model '{model}' is not served here.")
            return self.transcribers[model]

        async with self.budget.hold(size):
            if speakers is not None and self.diarizer is None:
                raise InvalidParameter(
                    "Speaker diarization is not served here.",
                    code="diarization_unavailable",
                    status_code=400,
                    param="diarize",
                )
            async for item in run(
                self.pre,
                source,
                self.blobs.open_read,
                transcriber,
                target,
                options,
                prepare,
                self.burst,
                diarizer=self.diarizer if speakers is not None else None,
                speakers=speakers,
            ):
                yield item


def preprocessor_deployment(
    profile: PreprocessorProfile, settings: Settings, transcribers: dict, diarizer: Application | None = None
) -> Application:
    return Preprocessor.options(**profile.serve_options()).bind(
        settings.model_dump(mode="json"), transcribers, profile.nice, diarizer, profile.idle
    )
