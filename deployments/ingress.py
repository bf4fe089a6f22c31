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
from deployments.metrics import install_ray_metrics
from deployments.profiles import IngressProfile
from serve_app.preprocess import PrepareOptions
from serve_app.schemas import TranscriptionResult
from serve_app.settings import Settings
from serve_app.transcript import DecodeOptions

log = logging.getLogger("speechtotext")


class ReplicaWatch:
    """Which models have no running Transcriber replica, asked of the Serve controller every
    ``period`` seconds, so that sync requests for them get a 503 at once instead of waiting in
    the handle until a replica comes back."""

    def __init__(
        self,
        deployments: dict[str, str],
        period: float = 2.0,
        parts: dict[str, str] | None = None,
        first_wait: float = 15.0,
    ):
        self.deployments = deployments  # model -> deployment name
        self.parts = parts or {}  # what else must run for readiness: label -> deployment name
        self.period = period
        # How long a sync request waits for a model this replica has never seen running (the
        # app or this replica starting, a model's first replica coming up) before its 503.
        self.first_wait = first_wait
        self._unavailable: set[str] = set()
        # Models refused at once when they have no replica: seen running (and lost since), or
        # waited for in vain once (a model that cannot start does not hold every request 15 s).
        self._no_wait: set[str] = set()
        self._parts_missing: set[str] = set()
        self._looked_at = 0.0
        self._looking: asyncio.Future | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        """A first look now, then the watch in the background (on the replica's event loop)."""
        await self._look()
        self._task = asyncio.get_running_loop().create_task(self._run())

    def unavailable(self) -> set[str]:
        return self._unavailable

    async def confirm(self, model: str) -> bool:
        """Whether ``model`` has no running replica, asked again when the last answer (which
        says so) is older than half a second: a replica that has just started (the app
        coming up, a node back) serves at once, not at the next look. Requests that arrive
        while a look is under way wait for its answer, not for the one before it.

        A model this replica has never seen running is waited for, looked at every half
        second for up to ``first_wait`` seconds: an Ingress replica that starts before the
        model's (or looks before Serve reports it) would otherwise refuse the first requests.
        One it has seen running and lost (its node gone), or already waited for in vain, is
        refused at once."""
        deadline = time.monotonic() + (self.first_wait if model not in self._no_wait else 0.0)
        while True:
            if model in self._unavailable:
                if self._looking is None and time.monotonic() - self._looked_at > 0.5:
                    self._looking = asyncio.ensure_future(self._look())
                if self._looking is not None:
                    await asyncio.shield(self._looking)
            if model not in self._unavailable or time.monotonic() >= deadline:
                break
            await asyncio.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        if model in self._unavailable:
            self._no_wait.add(model)
            log.warning("replica watch: no running replica of %s; refusing a sync request", model)
        return model in self._unavailable

    async def not_running(self) -> list[str]:
        """Models and parts with no running replica, from a look at most half a second old."""
        if self._looking is None and time.monotonic() - self._looked_at > 0.5:
            self._looking = asyncio.ensure_future(self._look())
        if self._looking is not None:
            await asyncio.shield(self._looking)
        return sorted(self._unavailable) + sorted(self._parts_missing)

    async def _look(self) -> None:
        self._looked_at = time.monotonic()
        try:
            running = await asyncio.to_thread(self._running)
            self._unavailable = {
                model for model, name in self.deployments.items() if name in running and not running[name]
            }
            self._no_wait |= {model for model, name in self.deployments.items() if running.get(name)}
            self._parts_missing = {label for label, name in self.parts.items() if not running.get(name)}
        except Exception:  # the controller restarting: keep the last answer
            log.warning("replica watch: no status from the Serve controller", exc_info=True)
        finally:
            self._looking = None

    def _running(self) -> dict[str, int]:
        """Running replicas of each of this application's deployments, as Serve's controller
        reports them (called in a thread).

        First the application's status overview (a few ms): a HEALTHY deployment runs all
        its target replicas, at least one here; so does a part (the Preprocessor, whose
        minimum is one) that is scaling up or down. Only when a model is not HEALTHY
        (starting, scaling, its node gone) or a part is starting or failing comes
        ``serve.status()``, which builds every deployment's whole details on both sides
        (py-spy found ~5% of the Ingress's busy samples there under load; its CPU per request
        moved 19.7 -> 18-19 ms without it, within this box's noise)."""
        from ray.serve._private.common import DeploymentStatus
        from ray.serve.context import _get_global_client

        app = serve.get_replica_context().app_name
        overview = _get_global_client().get_serve_status(app)
        status = {d.name: d.status for d in overview.deployment_statuses}
        scaling = (DeploymentStatus.HEALTHY, DeploymentStatus.UPSCALING, DeploymentStatus.DOWNSCALING)
        if all(status.get(name) == DeploymentStatus.HEALTHY for name in self.deployments.values()) and all(
            status.get(name) in scaling for name in self.parts.values()
        ):
            return dict.fromkeys(status, 1)
        deployments = serve.status().applications[app].deployments
        return {name: d.replica_states.get("RUNNING", 0) for name, d in deployments.items()}

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.period)
            await self._look()


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
        from serve_app.warmup import speech

        while self.watch and await self.watch.not_running():
            await asyncio.sleep(0.5)
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
    from serve_app.blobs import BlobStore
    from serve_app.catalog import ModelCatalog
    from serve_app.jobs import JobService
    from serve_app.jobstore import JobStore
    from serve_app.service import TranscriptionService

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
            {model: transcriber_name(model) for model in transcribers}, parts={"preprocessor": "Preprocessor"}
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

        ``options`` are those of ``serve_app.request.TranscriptionRequest``; the call is a job row
        of ``tenant`` (default STT_DEFAULT_USER). Code holding a handle is inside the cluster and
        trusted: it names its tenant, and no key or rate limit applies.
        """
        from serve_app.auth import Principal, check_tenant
        from serve_app.errors import ServiceError
        from serve_app.metrics import METRICS
        from serve_app.request import TranscriptionRequest

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

    async def batch_stats(self) -> dict[str, dict]:
        transcribers = self.service.backend.transcribers
        stats = await asyncio.gather(*(handle.batch_stats.remote() for handle in transcribers.values()))
        return dict(zip(transcribers, stats))


def ingress_deployment(profile: IngressProfile, settings: Settings, preprocessor, transcribers, worker) -> Application:
    options = profile.serve_options()
    if settings.ingress_replicas:
        options = {k: v for k, v in options.items() if k != "autoscaling_config"} | {
            "num_replicas": settings.ingress_replicas
        }
    return Ingress.options(**options).bind(
        preprocessor, transcribers, settings.model_dump(mode="json"), worker, profile.nice
    )
