"""The Transcriber deployment (one per model) and the options it is deployed with."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from ray import serve
from ray.serve import Application

from deployments.priority import lower_priority
from deployments.profiles import TranscriberProfile
from deployments.ray_metrics import install_ray_metrics
from serve_app.asr.runner import DecodeLimits
from serve_app.audio.pieces import PreparedAudio
from serve_app.core.settings import Settings
from serve_app.core.transcript import DecodeOptions, Transcript

log = logging.getLogger("speechtotext")

# jemalloc keeping what is freed for reuse (never handing it back to the OS). CTranslate2 on CPU
# allocates each call's buffers (tens of MB a 30 s window: the encoder's attention) with
# posix_memalign and glibc gives them back to the OS on free: every call then page-faults them
# in again, zero-filled. On the bench that was ~1M page faults and 2 s of kernel time in a
# 7.5 s pass at concurrency 16; the Transcriber's memory stays at its peak instead.
JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"


def transcriber_name(model: str) -> str:
    return "Transcriber-" + re.sub(r"[^A-Za-z0-9]+", "-", model)


@serve.deployment
class Transcriber:
    """One Whisper model: a ``ModelRunner`` gathering the chunks of concurrent requests."""

    def __init__(self, *, model: str, settings: dict, profile: dict):
        from serve_app.asr.catalog import ModelCatalog
        from serve_app.asr.runner import load_runner

        install_ray_metrics()
        cfg, options = Settings(**settings), TranscriberProfile(**profile)
        lower_priority(options.nice, options.idle)
        catalog = ModelCatalog.load(cfg.catalog_path, cfg.cache_dir)
        self.allocator = _allocator_in_use()  # fixed when the process started
        self.transcriber = load_runner(
            cfg,
            catalog,
            model,
            cpu_threads=options.cpu_threads,
            workers=options.model_workers,
            limits=options.limits(),
        )
        if cfg.warmup:  # before Serve marks this replica running (serve_app/warmup.py)
            from serve_app.asr.warmup import warm_engine

            warm_engine(self.transcriber.engine, catalog.get(model).multilingual, workers=options.model_workers)

    def reconfigure(self, config: dict) -> None:
        """Batch limits from user_config: change them with `serve deploy`, no restart."""
        self.transcriber.set_limits(DecodeLimits(**{**self.transcriber.limits.model_dump(), **config}))

    async def detect_language(self, piece: PreparedAudio) -> tuple[str, float]:
        return await self.transcriber.detect_language(piece)

    async def transcribe_piece(self, piece: PreparedAudio, options: DecodeOptions) -> Transcript:
        return await self.transcriber.transcribe_piece(piece, options)

    def decode_stats(self) -> dict:
        return {**self.transcriber.stats(), "allocator": self.allocator}


def transcriber_deployment(model: str, profile: TranscriberProfile, settings: Settings) -> Application:
    """The Transcriber of ``model``, with the profile's options and the settings' overrides."""
    overrides = {
        "cpu_threads": settings.cpu_threads,
        "model_workers": settings.model_workers,
        "max_batch_size": settings.max_batch_size,
        "batch_wait_timeout_s": settings.batch_wait_timeout_s,  # 0 is a value: no wait
    }
    profile = TranscriberProfile.model_validate(
        {**profile.model_dump(), **{k: v for k, v in overrides.items() if v is not None}}
    )
    options = with_env(profile.serve_options(), allocator_env(profile.allocator))
    # A full batch for every model worker, and as many queued behind them.
    options["max_ongoing_requests"] = max(
        options.get("max_ongoing_requests", 0), 2 * profile.model_workers * profile.max_batch_size
    )
    return Transcriber.options(name=transcriber_name(model), user_config=profile.limits().model_dump(), **options).bind(
        model=model, settings=settings.replica_args(), profile=profile.model_dump(mode="json")
    )


def _allocator_in_use() -> str:
    """The malloc this process runs with: jemalloc where the profile preloaded it."""
    maps = Path("/proc/self/maps")
    return "jemalloc" if maps.exists() and "libjemalloc" in maps.read_text() else "system"


def allocator_env(allocator: str) -> dict[str, str]:
    """Environment that gives a replica process the profile's malloc: ``jemalloc`` (the
    build that ships in Ray's wheel, preloaded) or ``system``."""
    if allocator == "system":
        return {}
    import ray

    lib = Path(ray.__file__).parent / "core" / "libjemalloc.so"
    if not lib.exists():
        log.warning("no %s in this Ray build: the Transcribers keep the system malloc", lib)
        return {}
    return {"LD_PRELOAD": str(lib), "MALLOC_CONF": JEMALLOC_CONF}


def with_env(options: dict, env: dict[str, str]) -> dict:
    """``options`` with ``env`` added to its runtime_env (Ray merges it with the job's)."""
    if not env:
        return options
    actor = dict(options.get("ray_actor_options") or {})
    runtime_env = dict(actor.get("runtime_env") or {})
    runtime_env["env_vars"] = {**runtime_env.get("env_vars", {}), **env}
    actor["runtime_env"] = runtime_env
    return {**options, "ray_actor_options": actor}
