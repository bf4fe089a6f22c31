"""The Preprocessor deployment, which orchestrates each request, and the options it is deployed with."""

from __future__ import annotations

from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from deployments.priority import lower_priority
from deployments.profiles import PreprocessorProfile
from serve_app.audio.preprocess import PrepareOptions
from serve_app.core.settings import Settings
from serve_app.core.transcript import DecodeOptions, DiarizeOptions


@serve.deployment
class Preprocessor:
    """The orchestrator of a request: it decodes each recording (decode, normalize, VAD, in
    threads) and drives it through the models: it picks the model for ``model=auto``, detects
    the language, sends each piece to its model's Transcriber (and to the Diarizer when asked)
    and streams the transcript back piece by piece. It hosts the one ``Pipeline``
    (serve_app/transcription/pipeline.py), which ``LocalBackend`` runs in-process too; this class
    only builds it over deployment handles and forwards. Samples go from here to the Transcriber
    through the object store, never through the Ingress."""

    def __init__(
        self,
        *,
        settings: dict,
        transcribers: dict[str, DeploymentHandle],
        diarizer: DeploymentHandle | None = None,
        nice: int = 0,
        idle: bool = False,
    ):
        from deployments.handles import HandleDiarizer, HandleTranscriber
        from serve_app.asr.catalog import ModelCatalog
        from serve_app.audio.preprocess import AudioPreprocessor, DecodeBudget
        from serve_app.jobs.blobs import BlobStore
        from serve_app.transcription.pipeline import Pipeline

        lower_priority(nice, idle)  # this thread and the decode threads it starts
        cfg = Settings(**settings)
        catalog = ModelCatalog.load(cfg.catalog_path, cfg.cache_dir)
        preprocessor = AudioPreprocessor(cfg.vad_method, cfg.max_audio_seconds)
        if cfg.warmup:  # before Serve marks this replica running (serve_app/asr/warmup.py)
            from serve_app.asr.warmup import warm_preprocessor

            warm_preprocessor(preprocessor)
        self.pipeline = Pipeline(
            preprocessor,
            {m: HandleTranscriber(h, catalog.get(m).multilingual) for m, h in transcribers.items()},
            budget=DecodeBudget(cfg.preprocess_memory_seconds, cfg.max_audio_seconds),
            blobs=BlobStore.from_settings(cfg),
            diarizer=HandleDiarizer(diarizer) if diarizer is not None else None,
        )

    def record_autoscaling_stats(self) -> dict[str, float]:
        """Read by deployments.autoscaling.decode_load_policy."""
        return {"decoding": float(self.pipeline.burst.decoding)}

    async def transcribe(
        self, source, target, options: DecodeOptions, prepare: PrepareOptions, speakers: DiarizeOptions | None = None
    ):
        """Streaming: ``serve_app.transcription.pipeline.Part`` per piece, then a ``Finished``."""
        async for item in self.pipeline.run(source, target, options, prepare, speakers):
            yield item


def preprocessor_deployment(
    profile: PreprocessorProfile, settings: Settings, transcribers: dict, diarizer: Application | None = None
) -> Application:
    return Preprocessor.options(**profile.serve_options()).bind(
        settings=settings.replica_args(),
        transcribers=transcribers,
        diarizer=diarizer,
        nice=profile.nice,
        idle=profile.idle,
    )
