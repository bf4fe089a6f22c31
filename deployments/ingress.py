"""The Ingress deployment (HTTP and Python entry point), the backend over deployment handles,
and the options it is deployed with."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid

from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from deployments.handles import client_error
from deployments.profiles import IngressProfile
from deployments.ray_metrics import install_ray_metrics
from deployments.replica_watch import ReplicaWatch, ServeStatus
from serve_app.audio.preprocess import PrepareOptions
from serve_app.core.results import TranscriptionResult
from serve_app.core.settings import Settings
from serve_app.core.transcript import DecodeOptions

log = logging.getLogger("speechtotext")


class RayBackend:
    """TranscriptionBackend over deployment handles."""

    def __init__(
        self,
        preprocessor: DeploymentHandle,
        transcribers: dict[str, DeploymentHandle],
        watch: ReplicaWatch | None = None,
    ):
        self.preprocessor = preprocessor
        self.transcribers = transcribers
        self.watch = watch
        self._warmup: asyncio.Task | None = None

    def unavailable(self) -> set[str]:
        return self.watch.unavailable() if self.watch else set()

    async def available(self, model: str) -> bool:
        return not (self.watch and await self.watch.confirm(model))

    def problems(self) -> list[str]:
        if self.watch is not None and self.watch.broken:
            return [f"replica watch: {self.watch.broken}"]
        return []

    async def not_ready(self) -> list[str]:
        waiting = await self.watch.not_running() if self.watch else []
        if self._warmup is not None and not self._warmup.done():
            waiting.append("warm-up")
        return waiting

    def start_warmup(self) -> None:
        """Run the bundled speech through this replica's path to each model once everything
        runs (in the background; /ready waits for it). The first request through a handle
        sets up its router and waits for the replica list: a request should not pay that."""
        self._warmup = asyncio.get_running_loop().create_task(self._warm())

    async def _warm(self) -> None:
        from serve_app.asr.warmup import speech

        # Once a second: while models start, each look builds serve.status()'s whole details
        # (tens of ms on both sides), and a start is short of CPU already.
        while self.watch and await self.watch.not_running():
            await asyncio.sleep(1.0)
        for model in self.transcribers:
            started = time.perf_counter()
            try:
                async for _ in self.transcribe(speech(), model, DecodeOptions(language="en"), PrepareOptions()):
                    pass
            except Exception:  # a warm-up that fails must not stop the replica: requests will tell
                log.warning("warm-up through %s failed", model, exc_info=True)
            log.info("Ingress: path to %s warmed in %.2f s", model, time.perf_counter() - started)

    async def transcribe(self, source, target, options: DecodeOptions, prepare: PrepareOptions, speakers=None):
        """The Preprocessor's stream of parts; the audio goes from it to the Transcriber
        through the object store, never through this replica."""
        items = self.preprocessor.options(stream=True).transcribe.remote(source, target, options, prepare, speakers)
        done = False
        try:
            async for item in items:
                yield item
            done = True
        except Exception as exc:
            raise client_error(exc) from None
        finally:
            if not done:
                with contextlib.suppress(Exception):
                    items.cancel()  # the client went away: stop the work done for it


def service_of(
    cfg: Settings,
    preprocessor: DeploymentHandle,
    transcribers: dict[str, DeploymentHandle],
    watch: ReplicaWatch | None = None,
):
    """The TranscriptionService of a replica: jobs in PostgreSQL and the BlobStore, audio to the
    deployments behind the handles."""
    from serve_app.asr.catalog import ModelCatalog
    from serve_app.jobs.blobs import BlobStore
    from serve_app.jobs.service import JobService
    from serve_app.jobs.store import JobStore
    from serve_app.transcription.service import TranscriptionService

    store = JobStore(cfg.database_url, min_size=cfg.db_pool_min, max_size=cfg.db_pool_max)
    jobs = JobService(store, BlobStore.from_settings(cfg), max_attempts=cfg.job_max_attempts)
    catalog = ModelCatalog.load(cfg.catalog_path, cfg.cache_dir)
    return TranscriptionService(cfg, catalog, RayBackend(preprocessor, transcribers, watch), jobs)


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
@serve.ingress()
class Ingress:
    """HTTP (FastAPI) and Python entry point."""

    async def __init__(
        self,
        *,
        preprocessor: DeploymentHandle,
        transcribers: dict[str, DeploymentHandle],
        settings: dict,
        worker: DeploymentHandle | None = None,
        nice: int = 0,
    ):
        from deployments.transcriber import transcriber_name
        from serve_app.api import create_app

        logging.basicConfig(level=logging.INFO, format="%(message)s")
        install_ray_metrics()
        if nice:
            _renice_threads(nice)
        # `worker` is bound here only so that Serve deploys the JobWorker; jobs reach it
        # through PostgreSQL, never through this handle.
        watch = ReplicaWatch(
            ServeStatus(serve.get_replica_context().app_name),
            {model: transcriber_name(model) for model in transcribers},
            parts={"preprocessor": "Preprocessor"},
        )
        await watch.start()
        cfg = Settings(**settings)
        self.service = service_of(cfg, preprocessor, transcribers, watch)
        if cfg.warmup:
            self.service.backend.start_warmup()
        self.api = create_app(self.service)
        # Which replica answered (x-stt-replica on every response): for operators and tests.
        self.api.state.replica = serve.get_replica_context().replica_id.unique_id
        # Serve's RequestIdMiddleware, around this app, answers with the request's X-Request-ID
        # (made by Serve when the client sent none, or HAProxy dropped a malformed one): this
        # app adds none of its own, or every response would carry it twice.
        self.api.state.server_echoes_request_id = True

    def __serve_build_asgi_app__(self):
        return self.api

    async def transcribe(
        self, audio: bytes, filename: str = "audio", tenant: str | None = None, **options
    ) -> TranscriptionResult:
        """Python callers: ``serve.get_app_handle("speechtotext").transcribe.remote(bytes, model=...)``.

        ``options`` are those of ``serve_app.transcription.request.TranscriptionRequest``; the call is a job row
        of ``tenant`` (default STT_DEFAULT_USER). Code holding a handle is inside the cluster and
        trusted: it names its tenant, and no key or rate limit applies.
        """
        from serve_app.core.errors import ServiceError
        from serve_app.core.metrics import METRICS
        from serve_app.tenancy.keys import Principal, check_tenant
        from serve_app.transcription.request import TranscriptionRequest

        service, status, model = self.service, 500, ""
        try:
            resolved = service.resolve(TranscriptionRequest.parse(**options))
            model = resolved.model  # a served model's name: a bounded label, unlike what was asked
            caller = Principal(check_tenant(tenant or service.settings.default_user))
            upload = service.upload(audio, filename)
            result = await service.transcribe(resolved, upload, caller=caller, request_id=f"handle-{uuid.uuid4().hex}")
            status = 200
            return result
        except ServiceError as exc:
            status = exc.status_code
            raise
        finally:
            METRICS.request("handle:transcribe", model, status)

    async def decode_stats(self) -> dict[str, dict]:
        transcribers = self.service.backend.transcribers
        stats = await asyncio.gather(*(handle.decode_stats.remote() for handle in transcribers.values()))
        return dict(zip(transcribers, stats))


def ingress_deployment(profile: IngressProfile, settings: Settings, preprocessor, transcribers, worker) -> Application:
    options = profile.serve_options()
    if settings.ingress_replicas:
        options = {k: v for k, v in options.items() if k != "autoscaling_config"} | {
            "num_replicas": settings.ingress_replicas
        }
    return Ingress.options(**options).bind(
        preprocessor=preprocessor,
        transcribers=transcribers,
        settings=settings.replica_args(),
        worker=worker,
        nice=profile.nice,
    )
