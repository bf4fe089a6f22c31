"""The service as a person starts it (`stt serve`, what `make run` runs, or `serve run
serve_config.yaml`), in a process of its own, and what it may leave behind when it stops.

Shared by tests/lifecycle and loadtests/lifecycle.py. Everything the instance starts carries a
marker in its environment, so that leftovers are found (and, after a failed test, ended) by
their pids, never by a name.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

from deployments.local_cluster import free_port

REPO = Path(__file__).resolve().parents[1]


class ServiceProcess:
    """One service process and what it may leave behind. ``command``: ``stt`` (python -m cli
    serve) or ``serve-run`` (Ray's ``serve run serve_config.yaml``, Ctrl-C to stop)."""

    def __init__(self, tmp_path: Path, dsn: str | None, command: str = "stt", env: dict | None = None):
        self.marker = uuid.uuid4().hex  # in the environment of everything it starts
        self.ports = {
            "http": free_port(),
            "metrics": free_port(),
            "haproxy_metrics": free_port(),
            "haproxy_stats": free_port(),
        }
        self.env = os.environ | {
            "PYTHONPATH": str(REPO),
            "HF_HUB_OFFLINE": "1",
            "STT_PORT": str(self.ports["http"]),
            "STT_METRICS_PORT": str(self.ports["metrics"]),
            "RAY_SERVE_HAPROXY_METRICS_PORT": str(self.ports["haproxy_metrics"]),
            "RAY_SERVE_HAPROXY_STATS_PORT": str(self.ports["haproxy_stats"]),
            "STT_DATA_DIR": str(tmp_path / "data"),
            "STT_MODELS": "tiny.en",
            "STT_LIFECYCLE_TEST": self.marker,
        }
        self.env |= ({"STT_DATABASE_URL": dsn} if dsn else {}) | (env or {})
        self.env_data_dir = Path(self.env["STT_DATA_DIR"])
        self.command = command
        self.url = f"http://127.0.0.1:{self.ports['http']}"
        self.log = tmp_path / "serve.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            if self.command == "stt":
                argv = [sys.executable, "-m", "cli", "serve"]
            else:  # Ray's CLI, from the environment's bin beside this Python
                config = _config_on_port(self.log.parent, self.ports["http"], self.env["STT_MODELS"].replace(",", ", "))
                argv = [str(Path(sys.executable).with_name("serve")), "run", str(config)]
            self.proc = subprocess.Popen(
                argv,
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a process group of its own, as a terminal gives it
                # Ctrl-C works as at a terminal even when this runs in the background of a
                # shell (`cmd &` ignores SIGINT, and children inherit ignored signals).
                preexec_fn=_default_sigint,
            )

    def wait_ready(self, timeout: float = 420) -> list[int]:
        """Poll /api/v1/ready until it says 200; the statuses seen on the way."""
        seen = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                status = httpx.get(self.url + "/api/v1/ready", timeout=5).status_code
                seen.append(status)
                if status == 200:
                    return seen
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"not ready in {timeout} s: {self.log.read_text()[-3000:]}")

    def stop(self, timeout: float = 120, sig: int = signal.SIGTERM, group: bool | None = None) -> float:
        """SIGTERM to the process, as `kill` or a service manager sends it; SIGINT to its
        process group, as Ctrl-C at a terminal does; ``group``: ``sig`` to the group whatever
        it is (`kill -TERM -PGID`, a service manager stopping a whole control group). The
        seconds until it exited."""
        started = time.monotonic()
        if group or (group is None and sig == signal.SIGINT):
            os.killpg(self.proc.pid, sig)
        else:
            self.proc.send_signal(sig)
        self.proc.wait(timeout=timeout)
        return time.monotonic() - started

    def leftovers(self) -> list[str]:
        """Processes still carrying this instance's marker in their environment."""
        found = []
        needle = f"STT_LIFECYCLE_TEST={self.marker}".encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(f"{entry.name} {(entry / 'cmdline').read_bytes()[:120]!r}")
            except OSError:
                continue  # gone, or not ours to read
        return found

    def listening(self) -> list[str]:
        return [name for name, port in self.ports.items() if _accepts(port)]

    def kill_leftovers(self) -> None:
        """After a failed test: end what this instance left, by pid."""
        for line in self.leftovers():
            try:
                os.kill(int(line.split()[0]), signal.SIGKILL)
            except ProcessLookupError:
                pass


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def bound_addresses(port: int) -> set[str]:
    """Local addresses listening on ``port`` (from ss)."""
    out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout
    return {line.split()[3].rsplit(":", 1)[0] for line in out.splitlines() if line.strip()}


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _config_on_port(folder: Path, port: int, models: str) -> Path:
    """serve_config.yaml as shipped, on ``port`` instead of 8000 and serving ``models``
    (STT_MODELS of the instance: the config's ``args`` would override it)."""
    text = (REPO / "serve_config.yaml").read_text()
    assert "port: 8000" in text and "models: [tiny.en, base]" in text
    text = text.replace("port: 8000", f"port: {port}", 1).replace("models: [tiny.en, base]", f"models: [{models}]", 1)
    path = folder / "serve_config.yaml"
    path.write_text(text)
    return path


ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def _admin_dsn(admin: str | None) -> str:
    return admin or os.environ.get("STT_TEST_PG_ADMIN", ADMIN_DSN)


def _run_sql(admin: str, *statements: str) -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(admin)
        try:
            for sql in statements:
                await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


@contextlib.contextmanager
def fresh_database(admin: str | None = None, template: str | None = None):
    """A new database on the machine's PostgreSQL (127.0.0.1:5432, trust auth), dropped after;
    yields its URL. With ``template`` (a database name) it is a copy of that one: a migrated
    schema in a few milliseconds instead of running the migrations again."""
    admin = _admin_dsn(admin)
    name = f"stt_test_{uuid.uuid4().hex[:10]}"
    _run_sql(admin, f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    try:
        yield admin.rsplit("/", 1)[0] + "/" + name
    finally:
        _run_sql(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def migrated_template(admin: str | None = None):
    """A database with the service's schema, to copy (``fresh_database(template=...)``): yields
    its name. Nothing may stay connected to it, as PostgreSQL copies only an idle database."""
    from serve_app.jobs.store import JobStore

    with fresh_database(admin) as url:

        async def migrate() -> None:
            store = JobStore(url, min_size=0, max_size=1)
            try:
                await store.migrate()
            finally:
                await store.close()

        asyncio.run(migrate())
        yield url.rsplit("/", 1)[1]
