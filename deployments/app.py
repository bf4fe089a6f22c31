"""Ray Serve deployments. Thin: each holds serve_app objects and forwards to them.

``build_app(args)`` is the import_path of serve_config.yaml.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml
from ray import serve
from ray.serve import Application
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle

from serve_app.api import create_app
from serve_app.audio import PreparedAudio
from serve_app.batching import PullBatcher
from serve_app.catalog import ModelCatalog
from serve_app.engine import DecodeOptions, Transcript, join_pieces, window_load
from serve_app.errors import Overloaded, unwrap
from serve_app.preprocess import PrepareOptions
from serve_app.schemas import TranscriptionResult
from serve_app.settings import REPO_ROOT, Settings

log = logging.getLogger("speechtotext")
APP_NAME = "speechtotext"


def transcriber_name(model: str) -> str:
    return "Transcriber-" + re.sub(r"[^A-Za-z0-9]+", "-", model)


def _renice_threads(nice: int) -> None:
    """Every thread of this process to ``nice``; threads started later inherit it.

    The Ingress runs ahead of everything else on the box (negative nice): cheap calls then
    wait neither for the decode threads nor for Ray's own processes or a load generator.
    Raising priority needs CAP_SYS_NICE; without it the Ingress keeps its priority.
    """
    for tid in os.listdir("/proc/self/task"):
        try:
            os.setpriority(os.PRIO_PROCESS, int(tid), nice)
        except PermissionError:
            log.warning("cannot set the Ingress to nice %s (needs CAP_SYS_NICE); left as is", nice)
            return
        except (OSError, ValueError):
            continue  # the thread ended meanwhile


@serve.deployment
class Preprocessor:
    """Decode, normalize and VAD; CPU work in a thread so the replica keeps answering."""

    def __init__(self, settings: dict, nice: int = 0):
        from serve_app.preprocess import AudioPreprocessor

        if nice:
            os.nice(nice)  # this thread and the decode threads it starts: see Transcriber
        cfg = Settings(**settings)
        self.pre = AudioPreprocessor(cfg.vad_method, cfg.max_audio_seconds)
        self._working = 0

    async def prepare(self, data: bytes, options: PrepareOptions) -> PreparedAudio:
        self._working += 1
        try:
            prepared = await asyncio.to_thread(self.pre.prepare, data, options)
        finally:
            self._working -= 1
        prepared.preparing = self._working  # the rest of a burst, still on its way
        return prepared


@serve.deployment
class Transcriber:
    """One Whisper model; gathers the chunks of concurrent requests into shared batches."""

    def __init__(self, model: str, settings: dict, engine: dict):
        from serve_app.alignment import Aligner
        from serve_app.engine import WhisperEngine

        cfg = Settings(**settings)
        if engine.get("nice"):
            # Decoding takes whatever CPU is left; the API, Preprocessor and JobWorker (also
            # Ray workers, at the same priority) come first, so health and status calls stay
            # fast while the models are saturated. Throughput is unchanged: the cores stay busy.
            os.nice(int(engine["nice"]))
        catalog = ModelCatalog.load(cfg.catalog_path, cfg.cache_dir)
        self.model = model
        self.allocator = _allocator_in_use()  # fixed when the process started
        self.engine = WhisperEngine(
            catalog.resolve(model),
            multilingual=catalog.get(model).multilingual,
            device=cfg.resolved_device,
            compute_type=cfg.resolved_compute_type,
            cpu_threads=engine["cpu_threads"],
            num_workers=engine["model_workers"],
            aligner=Aligner(cfg.align_models, cfg.resolved_device) if cfg.align_models else None,
            pack=cfg.pack_short_chunks,
        )
        # Cross-request batching: a model worker that comes free takes the queued requests
        # that fill up to max_batch_size windows (serve_app/batching.py says why not
        # @serve.batch). Limits come from user_config (reconfigure).
        self._batcher = PullBatcher(
            self.engine.transcribe_many,
            size=lambda item: window_load(item[0]),
            workers=engine["model_workers"],
            max_size=16,
            wait_s=0.05,
            coming=lambda item: item[0].preparing,
        )

    def reconfigure(self, config: dict) -> None:
        """Batch limits from user_config: change them with `serve deploy`, no restart."""
        batcher = self._batcher
        batcher.set_limits(
            int(config.get("max_batch_size", batcher.max_size)),
            float(config.get("batch_wait_timeout_s", batcher.wait_s)),
        )
        self.engine.decode_batch_size = int(config.get("decode_batch_size", self.engine.decode_batch_size))

    async def transcribe(self, audio: PreparedAudio, options: DecodeOptions) -> Transcript:
        options, probability, pieces = await self._start(audio, options)
        return join_pieces(await asyncio.gather(*pieces), options, probability)

    async def transcribe_stream(self, audio: PreparedAudio, options: DecodeOptions):
        """The transcript piece by piece, in order, each as soon as it is decoded."""
        options, probability, pieces = await self._start(audio, options)
        try:
            for piece in pieces:
                yield join_pieces([await piece], options, probability)
        finally:
            for piece in pieces:
                piece.cancel()  # the caller went away: drop what is still queued

    async def _start(self, audio: PreparedAudio, options: DecodeOptions):
        if options.language is None and self.engine.multilingual and audio.chunks:
            # Detect once per request so all its pieces decode in the same language.
            first = audio.chunk_samples(audio.chunks[0])
            [(language, probability)] = await asyncio.to_thread(self._detect, first)
            options = replace(options, language=language)
        else:
            probability = None
        # A long request is cut into one piece per <= 30 s chunk; pieces queue like any other
        # request, so a long request never starves short ones, never exceeds a batch, and all
        # model workers decode it at once (and its short tail shares a window with others).
        parts = [replace(audio, chunks=[chunk]) for chunk in audio.chunks]
        pieces = [asyncio.ensure_future(self._batcher.submit((p, options))) for p in parts or [audio]]
        return options, probability, pieces

    def _detect(self, samples):
        return self.engine.detect_languages(self.engine.features(samples)[None])

    def batch_stats(self) -> dict:
        stats = self.engine.stats
        return {
            "decode_calls": stats.decode_calls,
            "chunks": stats.chunks,
            "windows": stats.windows,
            "largest_batch": stats.largest_batch,
            "requests_per_call": list(stats.requests_per_call),
            "batch_sizes": list(self._batcher.batches),  # in windows, as the batcher counts them
            "queued": self._batcher.queued,
            "allocator": self.allocator,
        }


def _allocator_in_use() -> str:
    """The malloc this process runs with: jemalloc where the profile preloaded it."""
    maps = Path("/proc/self/maps")
    return "jemalloc" if maps.exists() and "libjemalloc" in maps.read_text() else "system"


def _job_parts(cfg: Settings):
    """JobStore and BlobStore of a replica, from the shared settings."""
    from serve_app.blobs import BlobStore
    from serve_app.jobstore import JobStore

    store = JobStore(cfg.database_url, min_size=cfg.db_pool_min, max_size=cfg.db_pool_max)
    return store, BlobStore.from_settings(cfg)


@serve.deployment
class JobWorker:
    """Runs async jobs from the PostgreSQL queue through the Preprocessor and Transcribers."""

    async def __init__(self, preprocessor: DeploymentHandle, transcribers: dict[str, DeploymentHandle], settings: dict):
        from serve_app.webhooks import WebhookSender
        from serve_app.worker import JobWorker as Worker

        logging.basicConfig(level=logging.INFO, format="%(message)s")
        cfg = Settings(**settings)
        self.store, blobs = _job_parts(cfg)
        self.worker = Worker(
            self.store,
            blobs,
            RayBackend(preprocessor, transcribers),
            webhooks=WebhookSender(
                cfg.webhook_secret,
                max_attempts=cfg.webhook_max_attempts,
                backoff_seconds=cfg.webhook_backoff_seconds,
                timeout_seconds=cfg.webhook_timeout_seconds,
            ),
            lease_seconds=cfg.lease_seconds,
            concurrency=cfg.worker_concurrency,
            poll_seconds=cfg.worker_poll_seconds,
        )
        self._loop = asyncio.get_running_loop().create_task(self.worker.run())

    def check_health(self) -> None:
        if self._loop.done():  # the loop never returns; if it did, restart this replica
            raise RuntimeError(f"job loop stopped: {self._loop.exception()!r}")

    async def record_autoscaling_stats(self) -> dict[str, float]:
        """Read by deployments.autoscaling.job_backlog_policy."""
        return {"queue_depth": float(self.worker.queue_depth), "running_jobs": float(len(self.worker._running))}

    async def __del__(self):
        await self.worker.close()


def _client_error(exc: Exception) -> BaseException:
    """The error to raise for a failed handle call: Ray wraps remote errors; unwrap them."""
    cause = unwrap(exc)
    if isinstance(cause, (BackPressureError, DeploymentUnavailableError)):
        # A queue is full (max_queued_requests): tell the client to come back, now.
        return Overloaded("The service is at capacity; retry in a few seconds.")
    return cause


class RayBackend:
    """TranscriptionBackend over deployment handles."""

    def __init__(self, preprocessor: DeploymentHandle, transcribers: dict[str, DeploymentHandle]):
        self.preprocessor = preprocessor
        self.transcribers = transcribers

    async def transcribe(self, audio: bytes, model: str, options: DecodeOptions, prepare: PrepareOptions):
        # The prepared audio goes from Preprocessor to Transcriber through the object store,
        # never through this replica.
        prepared = self.preprocessor.prepare.remote(audio, prepare)
        try:
            return await self.transcribers[model].transcribe.remote(prepared, options)
        except Exception as exc:
            raise _client_error(exc) from None

    async def transcribe_stream(self, audio: bytes, model: str, options: DecodeOptions, prepare: PrepareOptions):
        prepared = self.preprocessor.prepare.remote(audio, prepare)
        parts = self.transcribers[model].options(stream=True).transcribe_stream.remote(prepared, options)
        done = False
        try:
            async for part in parts:
                yield part
            done = True
        except Exception as exc:
            raise _client_error(exc) from None
        finally:
            if not done:
                parts.cancel()  # the client went away: stop the Transcriber's work for it


@serve.deployment
@serve.ingress()
class Ingress:
    """HTTP (FastAPI) and Python entry point."""

    def __init__(
        self,
        preprocessor: DeploymentHandle,
        transcribers: dict[str, DeploymentHandle],
        settings: dict,
        worker: DeploymentHandle | None = None,
        nice: int = 0,
    ):
        from serve_app.jobs import JobService

        logging.basicConfig(level=logging.INFO, format="%(message)s")
        if nice:
            _renice_threads(nice)
        self.settings = Settings(**settings)
        self.backend = RayBackend(preprocessor, transcribers)
        # `worker` is bound here only so that Serve deploys the JobWorker; jobs reach it
        # through PostgreSQL, never through this handle.
        store, blobs = _job_parts(self.settings)
        self.jobs = JobService(store, blobs, self.backend, max_attempts=self.settings.job_max_attempts)

    def __serve_build_asgi_app__(self):
        self.api = create_app(self.backend, self.settings, jobs=self.jobs)
        return self.api

    async def transcribe(
        self,
        audio: bytes,
        model: str | None = None,
        language: str | None = None,
        task: str = "transcribe",
        beam_size: int | None = None,
        prompt: str | None = None,
        temperature: float = 0.0,
        timestamps: bool = False,
        word_timestamps: bool = False,
    ) -> TranscriptionResult:
        """Python callers: ``serve.get_app_handle("speechtotext").transcribe.remote(bytes)``."""
        ctx = self.api.state.context
        started = time.perf_counter()
        spec = ctx.model_spec(model)
        options = ctx.decode_options(
            spec,
            language=language,
            task=task,
            beam_size=beam_size,
            prompt=prompt,
            temperature=temperature,
            timestamps=timestamps,
            word_timestamps=word_timestamps,
        )
        transcript = await self.backend.transcribe(audio, spec.name, options, PrepareOptions())
        return TranscriptionResult.from_transcript(
            transcript, id=uuid.uuid4().hex, model=spec.name, processing_time=time.perf_counter() - started
        )

    async def batch_stats(self) -> dict[str, dict]:
        names = list(self.backend.transcribers)
        stats = await asyncio.gather(*(self.backend.transcribers[n].batch_stats.remote() for n in names))
        return dict(zip(names, stats))


def load_profile(name: str) -> dict[str, Any]:
    path = REPO_ROOT / "configs" / "profiles" / f"{name}.yaml"
    return yaml.safe_load(Path(path).read_text())


def _deployment_options(section: dict) -> dict:
    keys = ("num_replicas", "ray_actor_options", "max_ongoing_requests", "max_queued_requests", "autoscaling_config")
    return {k: section[k] for k in keys if k in section}


# jemalloc keeping what is freed for reuse (never handing it back to the OS). CTranslate2 on CPU
# allocates each call's buffers (tens of MB a 30 s window: the encoder's attention) with
# posix_memalign and glibc gives them back to the OS on free: every call then page-faults them
# in again, zero-filled. On the bench that was ~1M page faults and 2 s of kernel time in a
# 7.5 s pass at concurrency 16; the Transcriber's memory stays at its peak instead.
JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"


def _allocator_env(allocator: str | None) -> dict[str, str]:
    """Environment that gives a replica process the profile's malloc: ``jemalloc`` (the
    build that ships in Ray's wheel, preloaded) or ``system``."""
    if allocator in (None, "system"):
        return {}
    if allocator != "jemalloc":
        raise ValueError(f"allocator must be 'jemalloc' or 'system', not {allocator!r}")
    import ray

    lib = Path(ray.__file__).parent / "core" / "libjemalloc.so"
    if not lib.exists():
        log.warning("no %s in this Ray build: the Transcribers keep the system malloc", lib)
        return {}
    return {"LD_PRELOAD": str(lib), "MALLOC_CONF": JEMALLOC_CONF}


def _with_env(options: dict, env: dict[str, str]) -> dict:
    """``options`` with ``env`` added to its runtime_env (Ray merges it with the job's)."""
    if not env:
        return options
    actor = dict(options.get("ray_actor_options") or {})
    runtime_env = dict(actor.get("runtime_env") or {})
    runtime_env["env_vars"] = {**runtime_env.get("env_vars", {}), **env}
    actor["runtime_env"] = runtime_env
    return {**options, "ray_actor_options": actor}


def build_app(args: dict | None = None) -> Application:
    """The application: ``args`` override STT_* settings (serve_config.yaml's ``args``)."""
    from serve_app.database import database_url

    settings = Settings(**(args or {}))
    # With no database configured, an embedded PostgreSQL starts here, in the process that
    # builds the app (it lives as long as that process), and every replica gets its URL.
    settings = settings.model_copy(update={"database_url": database_url(settings)})
    profile = load_profile(settings.profile)
    catalog = ModelCatalog.load(settings.catalog_path, settings.cache_dir)
    for name in settings.models:
        catalog.get(name)  # an unknown name stops the deploy here, with the known names
    shared = settings.model_dump(mode="json")

    tr = dict(profile["transcriber"])
    batch = {
        "max_batch_size": tr.pop("max_batch_size", 16),
        "batch_wait_timeout_s": tr.pop("batch_wait_timeout_s", 0.05),
        "decode_batch_size": tr.pop("decode_batch_size", 4),
    }
    if settings.max_batch_size is not None:
        batch["max_batch_size"] = settings.max_batch_size
    if settings.batch_wait_timeout_s is not None:  # 0 is a value: no wait
        batch["batch_wait_timeout_s"] = settings.batch_wait_timeout_s
    engine = {
        "cpu_threads": tr.pop("cpu_threads", 2),
        "model_workers": tr.pop("model_workers", 1),
        "nice": tr.pop("nice", 0),
    }
    engine["cpu_threads"] = settings.cpu_threads or engine["cpu_threads"]
    engine["model_workers"] = settings.model_workers or engine["model_workers"]
    tr_options = _with_env(_deployment_options(tr), _allocator_env(tr.pop("allocator", None)))
    tr_options["max_ongoing_requests"] = max(
        tr_options.get("max_ongoing_requests", 0), 2 * engine["model_workers"] * batch["max_batch_size"]
    )  # a full batch for every model worker, and as many queued behind them
    transcribers = {
        name: Transcriber.options(name=transcriber_name(name), user_config=batch, **tr_options).bind(
            name, shared, engine
        )
        for name in settings.models
    }
    preprocessor = Preprocessor.options(**_deployment_options(profile["preprocessor"])).bind(
        shared, profile["preprocessor"].get("nice", 0)
    )
    worker_options = _deployment_options(profile.get("worker", {}))
    if "autoscaling_config" not in worker_options:
        worker_options["num_replicas"] = settings.worker_replicas
    worker = (
        JobWorker.options(**worker_options).bind(preprocessor, transcribers, shared)
        if settings.worker_replicas
        else None
    )
    return Ingress.options(**_deployment_options(profile["ingress"])).bind(
        preprocessor, transcribers, shared, worker, profile["ingress"].get("nice", 0)
    )
