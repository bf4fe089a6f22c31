"""`stt serve` (what `make run` runs) as a person runs it: started, ready, stopped with Ctrl-C
(SIGINT to its process group, as a terminal sends it) while it works. Nothing of it may outlive
a stop: no process (HAProxy included, which Ray leaves running, and the embedded PostgreSQL,
which once stayed whenever an earlier run had been killed) and no listening port; its running
job goes back to the queue at once, its attempt not counted. A SIGTERM to the main process
takes the same way out of `stt serve`; loadtests/lifecycle.py times both.

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


def test_stop_while_working_leaves_nothing_and_hands_the_job_back(instance):
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
    _wait_for_rows(instance, "the job running", "id = $1::uuid AND status = 'PROCESSING'", job["id"])

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
    _wait_for_rows(instance, "the sync request in flight", "is_sync AND status = 'PROCESSING'")
    took = instance.stop(sig=signal.SIGINT)  # Ctrl-C at a terminal: the whole process group
    request.join(timeout=60)
    print(f"stopped {took:.1f} s after Ctrl-C")  # the figures: loadtests/lifecycle.py

    assert instance.proc.returncode == 0, instance.log.read_text()[-3000:]
    assert answers and answers[0] in (200, 503), answers
    assert instance.leftovers() == [] and instance.listening() == []
    assert _postgres_of(instance) == []  # the embedded PostgreSQL stopped with it

    # The job went back to the queue at the stop, its attempt not counted (not left PROCESSING
    # to its lease): read on the service's own database, with the service gone.
    from serve_app.jobs.database import start_embedded, stop_embedded

    server = start_embedded(instance.env_data_dir / "pgdata")
    try:
        row = _job_row(server.get_uri(), job["id"])
    finally:
        stop_embedded()
    assert row == {"status": "PENDING", "attempts": 0, "lease_owner": None}, row


def _wait_for_rows(instance: ServiceProcess, what: str, where: str, *args) -> None:
    """Until a job row matches ``where`` (a generous deadline, not a claim)."""

    async def count() -> int:
        conn = await asyncpg.connect(_embedded_dsn(instance))
        try:
            return await conn.fetchval(f"SELECT count(*) FROM transcription_jobs WHERE {where}", *args)
        finally:
            await conn.close()

    deadline = time.monotonic() + 120
    while not asyncio.run(count()):
        assert time.monotonic() < deadline, f"{what}: not within 120 s"
        time.sleep(0.1)
