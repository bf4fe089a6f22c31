"""The JobWorker deployment (async jobs from PostgreSQL) and the options it is deployed with."""

from __future__ import annotations

import asyncio
import logging

from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from deployments.ingress import service_of
from deployments.profiles import WorkerProfile
from deployments.ray_metrics import install_ray_metrics
from serve_app.core.settings import Settings


@serve.deployment
class JobWorker:
    """Runs async jobs from the PostgreSQL queue through the Preprocessor and Transcribers."""

    async def __init__(
        self, *, preprocessor: DeploymentHandle, transcribers: dict[str, DeploymentHandle], settings: dict
    ):
        from serve_app.jobs.webhooks import WebhookSender

        logging.basicConfig(level=logging.INFO, format="%(message)s")
        install_ray_metrics()
        cfg = Settings(**settings)
        self.worker = service_of(cfg, preprocessor, transcribers).job_worker(
            webhooks=WebhookSender.from_settings(cfg),
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
        return {"queue_depth": float(self.worker.queue_depth), "running_jobs": float(self.worker.running)}

    async def __del__(self):
        await self.worker.close()


def worker_deployment(profile: WorkerProfile, settings: Settings, preprocessor, transcribers) -> Application | None:
    """The JobWorker, or None when the settings ask for no workers."""
    if not settings.worker_replicas:
        return None
    options = profile.serve_options()
    if "autoscaling_config" not in options:
        options["num_replicas"] = settings.worker_replicas
    return JobWorker.options(**options).bind(
        preprocessor=preprocessor, transcribers=transcribers, settings=settings.replica_args()
    )
