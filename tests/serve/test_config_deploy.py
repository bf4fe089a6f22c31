"""A config-file deploy's embedded database outlives the task that builds the app.

``serve run serve_config.yaml`` builds the app in a Ray task; with no STT_DATABASE_URL the
embedded PostgreSQL then belongs to a detached actor, not to the task's process (which would
stop it), and it stops when that actor is gone. Run here as Ray runs it: in a task, on the
suite's cluster.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg
import psutil


def test_the_embedded_database_of_a_config_deploy_outlives_the_build_and_stops_with_its_owner(service, tmp_path):
    import ray

    from deployments.embedded_database import ACTOR_NAME, NAMESPACE, deployment_database_url
    from serve_app.core.settings import Settings

    @ray.remote(num_cpus=0, max_calls=1)  # a process of its own that ends after the call, as a build task's
    def build(data_dir: str) -> tuple[str, int]:
        import os

        return deployment_database_url(Settings(data_dir=data_dir)), os.getpid()

    url, builder = ray.get(build.remote(str(tmp_path)))
    assert str(tmp_path / "pgdata") in url

    async def ping() -> int:
        conn = await asyncpg.connect(url, timeout=5)
        try:
            return await conn.fetchval("SELECT 1")
        finally:
            await conn.close()

    deadline = time.monotonic() + 60  # the build's process ends after its one call
    while psutil.pid_exists(builder) and psutil.Process(builder).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the build task's process outlived its call by a minute"
        time.sleep(0.2)
    assert asyncio.run(ping()) == 1  # the database did not go with it
    assert ray.get(build.remote(str(tmp_path)))[0] == url  # a second build joins the same owner

    ray.kill(ray.get_actor(ACTOR_NAME, namespace=NAMESPACE), no_restart=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            asyncio.run(ping())
        except (OSError, asyncpg.PostgresError, asyncio.TimeoutError):
            break
        time.sleep(1)
    else:
        raise AssertionError("the embedded PostgreSQL still runs a minute after its owner was killed")
