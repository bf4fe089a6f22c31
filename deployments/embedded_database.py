"""Who owns the embedded PostgreSQL when no STT_DATABASE_URL is given.

``make run`` (``stt serve``), the tests and the bench build the app in their own long-lived
process: the embedded server starts there and stops when that process exits.

``serve run serve_config.yaml`` and ``serve deploy`` build the app in a one-shot Ray task whose
process does not last (and pgserver stops its server when the last process holding it exits),
so there a detached actor, ``speechtotext-postgres`` in namespace ``speechtotext``, starts and
holds it on the node that builds the app, with its data in that node's STT_DATA_DIR. It lives
until it is killed (``ray kill``, or ``ray stop``), and the server stops with it. Its URL is a Unix socket: replicas on
other nodes cannot reach it, and a multi-node deploy sets STT_DATABASE_URL.
"""

from __future__ import annotations

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from serve_app.core.settings import Settings
from serve_app.jobs.database import database_url

ACTOR_NAME = "speechtotext-postgres"
NAMESPACE = "speechtotext"


# Stops the server once its owner's process is gone, however it went: `ray stop` and
# `ray kill` end the actor's process without running its exit handlers.
_REAPER = """
import os, subprocess, sys, time
owner, pg_ctl, pgdata, user = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4] or None
while True:
    try:
        os.kill(owner, 0)
    except ProcessLookupError:
        break
    time.sleep(1)
subprocess.run([pg_ctl, "-D", pgdata, "stop", "-m", "fast"], capture_output=True, timeout=120, user=user)
"""

_LAUNCH = """
import subprocess, sys
devnull = subprocess.DEVNULL
subprocess.Popen(sys.argv[1:], start_new_session=True, stdin=devnull, stdout=devnull, stderr=devnull)
"""


@ray.remote(num_cpus=0, max_restarts=-1)
class EmbeddedDatabase:
    """Holds the embedded PostgreSQL of ``pgdata`` for as long as this actor lives; a small
    reaper process stops the server when the actor's process ends."""

    def __init__(self, pgdata: str):
        import os
        import subprocess
        import sys
        from pathlib import Path

        from serve_app.jobs.database import start_embedded

        self.server = start_embedded(Path(pgdata))
        reaper = [
            sys.executable,
            "-c",
            _REAPER,
            str(os.getpid()),
            str(self.server.bin_path / "pg_ctl"),
            pgdata,
            self.server.system_user or "",  # pgserver runs PostgreSQL as its own user under root
        ]
        # Started through a launcher that exits at once, so the reaper is no child of this
        # worker: Ray kills a worker's children with it, and the reaper must outlive it.
        subprocess.run(
            [sys.executable, "-c", _LAUNCH, *reaper],
            check=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def url(self) -> str:
        return self.server.get_uri()


def _building_in_a_cluster_task() -> bool:
    """True inside a Ray worker process (a config-file deploy's build task), not a driver."""
    if not ray.is_initialized():
        return False
    return ray.get_runtime_context().worker.mode == ray.WORKER_MODE


def deployment_database_url(settings: Settings) -> str:
    """STT_DATABASE_URL, or the embedded database owned by whatever outlives this build."""
    if settings.database_url or not _building_in_a_cluster_task():
        return database_url(settings)
    node = ray.get_runtime_context().get_node_id()
    owner = EmbeddedDatabase.options(
        name=ACTOR_NAME,
        namespace=NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        # on this node: the data directory and the Unix socket are this node's
        scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
    ).remote(str(settings.data_dir / "pgdata"))
    return ray.get(owner.url.remote(), timeout=120)
