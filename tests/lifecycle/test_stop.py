"""`stt serve` (what `make run` runs) as a person runs it: started, ready, stopped with SIGTERM
while it works, started again, stopped with Ctrl-C. Nothing of it may outlive a stop: no
process (HAProxy included, which Ray leaves running, and the embedded PostgreSQL, which once
stayed whenever an earlier run had been killed) and no listening port; its running job goes
back to the queue at once and the next start finishes it.

Its own service in a process of its own, on the embedded PostgreSQL as `make run` uses it; the
tier runs after tests/serve has stopped its application, so the two never load the box at once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import time
import uuid

import asyncpg
import httpx
import pytest

from testkit.process import ServiceProcess, bound_addresses
from testkit.recordings import long_recording
from testkit.speech import audio

pytestmark = pytest.mark.serve


def _postgres_of(instance: ServiceProcess) -> list[str]:
    """The embedded PostgreSQL processes of this instance (by its data directory), if any run."""
    pgdata = str(instance.env_data_dir / "pgdata")
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True).stdout
    return [line.strip() for line in out.splitlines() if pgdata in line]


def _embedded_dsn(instance: ServiceProcess) -> str:
    return f"postgresql://postgres@/postgres?host={instance.env_data_dir / 'pgdata'}"


def _job_row(dsn: str, job_id: str) -> dict:
    async def read():
        conn = await asyncpg.connect(dsn)
        try:
            row = await conn.fetchrow(
                "SELECT status, attempts, lease_owner FROM transcription_jobs WHERE id = $1", uuid.UUID(job_id)
            )
            return dict(row)
        finally:
            await conn.close()

    return asyncio.run(read())


@pytest.fixture
def instance(tmp_path):
    instance = ServiceProcess(tmp_path, None)  # the embedded PostgreSQL, as `make run` has it
    yield instance
    if instance.proc is not None and instance.proc.poll() is None:
        instance.proc.kill()
        instance.proc.wait()
    instance.kill_leftovers()
    for line in _postgres_of(instance):  # by the pid of what runs on its own data directory
        os.kill(int(line.split()[0]), signal.SIGKILL)


def test_stop_while_working_then_start_again(instance, tmp_path):
    instance.start()
    seen = instance.wait_ready()
    # Readiness is not liveness: while the Transcriber loads and warms up (tens of seconds,
    # the Ingress up in one), /ready said 503 not_ready; /health answers 200 all along.
    assert 503 in seen, seen
    assert httpx.get(instance.url + "/api/v1/health").json()["status"] == "ok"
    # The internal listeners answer on the loopback only.
    for name in ("haproxy_metrics", "haproxy_stats"):
        assert bound_addresses(instance.ports[name]) == {"127.0.0.1"}, name

    # A long recording as a job, running when the stop comes.
    recording, _, seconds = long_recording(240)  # several seconds of work: running at the stop
    job = httpx.post(
        instance.url + "/api/v1/transcriptions",
        files={"file": ("talk.mp3", recording)},
        data={"model": "tiny.en", "sync": "false"},
        timeout=60,
    ).json()
    deadline = time.monotonic() + 120
    while _job_row(_embedded_dsn(instance), job["id"])["status"] != "PROCESSING":
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.2)

    # A short sync request in flight when the stop comes: it finishes, or is told 503.
    answers = []

    def sync_request():
        try:
            response = httpx.post(
                instance.url + "/api/v1/transcriptions",
                files={"file": ("a.wav", audio("harvard_01.wav"))},
                data={"model": "tiny.en"},
                timeout=60,
            )
            answers.append(response.status_code)
        except httpx.TransportError as exc:
            answers.append(repr(exc))

    request = threading.Thread(target=sync_request)
    request.start()
    time.sleep(0.3)
    took = instance.stop()
    request.join(timeout=60)
    print(f"stopped {took:.1f} s after SIGTERM")  # the figure: loadtests/lifecycle.py

    assert instance.proc.returncode == 0, instance.log.read_text()[-3000:]
    assert answers and answers[0] in (200, 503), answers
    assert instance.leftovers() == [] and instance.listening() == []
    assert _postgres_of(instance) == []

    # Started again at once on the same ports, it finishes the job. With one attempt: the stop
    # handed it back to the queue uncounted (a job left to its lease would be claimed twice).
    instance.start()
    instance.wait_ready()
    deadline = time.monotonic() + 300
    while (view := httpx.get(instance.url + f"/api/v1/transcriptions/{job['id']}", timeout=10).json())[
        "status"
    ] not in ("COMPLETED", "FAILED"):
        assert time.monotonic() < deadline, view
        time.sleep(1)
    assert view["status"] == "COMPLETED" and view["attempts"] == 1, view
    assert abs(view["duration"] - seconds) < 1

    took = instance.stop(sig=signal.SIGINT)  # Ctrl-C at a terminal: the whole process group
    print(f"stopped {took:.1f} s after Ctrl-C")
    assert instance.leftovers() == [] and instance.listening() == [] and _postgres_of(instance) == []


def test_serve_run_stops_on_ctrl_c_and_leaves_nothing(tmp_path, keyed_dsn):
    """`serve run serve_config.yaml`, the README's other way, stopped as Ctrl-C stops it (SIGINT
    to its process group)."""
    instance = ServiceProcess(tmp_path, keyed_dsn, command="serve-run")
    instance.start()
    try:
        instance.wait_ready()
        took = instance.stop(sig=signal.SIGINT)
        print(f"serve run stopped {took:.1f} s after Ctrl-C")
        assert instance.leftovers() == [] and instance.listening() == []
    finally:
        if instance.proc.poll() is None:
            instance.proc.kill()
        instance.kill_leftovers()
