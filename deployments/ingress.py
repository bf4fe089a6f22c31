"""The Ingress deployment (HTTP and Python entry point), the backend over deployment handles,
and the options it is deployed with."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid

from ray import serve
from ray.serve import Application
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle

from deployments.profiles import IngressProfile
from serve_app.errors import Overloaded, unwrap
from serve_app.preprocess import PrepareOptions
from serve_app.schemas import TranscriptionResult
from serve_app.settings import Settings
from serve_app.transcript import DecodeOptions

log = logging.getLogger("speechtotext")


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


def service_of(cfg: Settings, preprocessor: DeploymentHandle, transcribers: dict[str, DeploymentHandle]):
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
    return TranscriptionService(cfg, catalog, RayBackend(preprocessor, transcribers), jobs)


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

    def __init__(
        self,
        preprocessor: DeploymentHandle,
        transcribers: dict[str, DeploymentHandle],
        settings: dict,
        worker: DeploymentHandle | None = None,
        nice: int = 0,
    ):
        from serve_app.api import create_app

        logging.basicConfig(level=logging.INFO, format="%(message)s")
        if nice:
            _renice_threads(nice)
        # `worker` is bound here only so that Serve deploys the JobWorker; jobs reach it
        # through PostgreSQL, never through this handle.
        self.service = service_of(Settings(**settings), preprocessor, transcribers)
        self.api = create_app(self.service)
        # Which replica answered (x-stt-replica on every response): for operators and tests.
        self.api.state.replica = serve.get_replica_context().replica_id.unique_id

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
        from serve_app.request import TranscriptionRequest

        service = self.service
        resolved = service.resolve(TranscriptionRequest.parse(**options))
        caller = Principal(check_tenant(tenant or service.settings.default_user))
        upload = service.upload(audio, filename)
        return await service.transcribe(resolved, upload, caller=caller, request_id=f"handle-{uuid.uuid4().hex}")

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
