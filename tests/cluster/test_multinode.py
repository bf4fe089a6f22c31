"""A real Ray cluster of two nodes on this machine, the app deployed on it from a config file.

The head (``ray start --head``, resource ``cpu_work``) takes HTTP, the Preprocessor and the
JobWorker; a worker node (``ray start --address``, resource ``transcriber``) the Transcriber:
the cluster profile's placement. Jobs live in the machine's PostgreSQL (127.0.0.1:5432) and
blobs on a real S3-protocol server (moto), as a multi-node deploy needs. Then the worker node
is killed (every process of it, SIGKILL) in the middle of a batch of async jobs and started
again: every accepted job completes, and none twice.

Both nodes share this machine's ports, so only the head runs an HTTP proxy (``HeadOnly``); on
machines of their own ``proxy_location: EveryNode`` (serve_config.yaml) gives each node one.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import psutil
import pytest
import yaml

from deployments.local_cluster import free_port
from testkit.speech import audio, transcripts, wer
from tests.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
WEBHOOK_SECRET = "cluster-test-webhook-secret"
APP = "speechtotext"


@dataclass
class Node:
    """One ``ray start --block`` and every process it starts; stopped by its own ids."""

    name: str
    args: list[str]
    env: dict
    log: Path
    process: subprocess.Popen | None = None
    node_id: str = ""

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [str(BIN / "ray"), "start", "--block", *self.args],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def start_until_up(self, tries: int = 3, timeout: float = 300) -> None:
        """Start the node until `ray start` says its runtime started. Ray gives a node's raylet
        a fixed 30 s to register with the GCS (``ray/_private/node.py``, not a setting); beside
        the other test stream on 2 cores it took longer (two CI runs), and `ray start` then
        exits, stopping what it started: it is started again, up to ``tries`` times."""
        for _ in range(tries):
            offset = self.log.stat().st_size if self.log.exists() else 0
            self.start()
            deadline = time.monotonic() + timeout
            while "Ray runtime started" not in self.log.read_bytes()[offset:].decode(errors="replace"):
                if self.process.poll() is not None:
                    break  # it gave up: start it again
                assert time.monotonic() < deadline, f"{self.name}: ray start not up in {timeout} s"
                time.sleep(0.5)
            else:
                return
            self.process.wait()  # it stopped what it had started (its dashboard: "Exiting with SIGTERM")
        raise AssertionError(f"{self.name}: ray start failed {tries} times; see {self.log}")

    def processes(self) -> list[psutil.Process]:
        if self.process is None:  # never started (a fixture that failed before it)
            return []
        try:
            root = psutil.Process(self.process.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def kill(self) -> int:
        """The node dies at once, as a machine that loses power: SIGKILL to all of it."""
        procs = self.processes()
        for proc in procs:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(procs, timeout=30)
        return len(procs)

    def stop(self) -> None:
        """SIGTERM to every process of the node, then SIGKILL to what is left after 5 s (its
        raylet and GCS often wait for peers that are stopping too)."""
        procs = self.processes()
        for proc in procs:
            try:
                proc.send_signal(signal.SIGTERM)
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(procs, timeout=5)
        for proc in alive:
            proc.kill()
        psutil.wait_procs(alive, timeout=30)


@dataclass
class Cluster:
    url: str
    dashboard: str
    database_url: str
    head: Node
    worker: Node
    receiver: WebhookReceiver
    ray_token: str = ""  # Ray's token auth: every call to the dashboard carries it
    gcs: str = ""  # host:port of the head's GCS

    def client(self, **kw) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=kw.pop("timeout", 120), **kw)

    def control(self, path: str, **params) -> httpx.Response:
        """GET on the dashboard (Ray's state and Serve REST APIs), with the cluster's token. Over
        HTTP, not ray.util.state: that client keeps process-wide token state that other tiers'
        Ray clusters, started earlier in the same pytest, left behind."""
        headers = {"Authorization": f"Bearer {self.ray_token}"}
        return httpx.get(f"{self.dashboard}{path}", params=params, headers=headers, timeout=30)

    def _state(self, resource: str, **filters) -> list[dict]:
        params = {"limit": 1000, "filter_keys": [], "filter_predicates": [], "filter_values": []}
        for key, value in filters.items():
            params["filter_keys"].append(key)
            params["filter_predicates"].append("=")
            params["filter_values"].append(value)
        response = self.control(f"/api/v0/{resource}", **params)
        response.raise_for_status()
        return response.json()["data"]["result"]["result"]

    def alive_nodes(self) -> list[dict]:
        return self._state("nodes", state="ALIVE")

    def replicas(self, deployment: str) -> list[dict]:
        return self._state("actors", class_name=f"ServeReplica:{APP}:{deployment}", state="ALIVE")

    def ready_in_a_row(self, asks: int = 12) -> bool:
        """/api/v1/ready through the head, each ask on a connection of its own."""
        return all(httpx.get(f"{self.url}/api/v1/ready", timeout=10).status_code == 200 for _ in range(asks))

    def application(self) -> dict:
        response = self.control("/api/serve/applications/")
        response.raise_for_status()
        return response.json()["applications"].get(APP, {})

    def rows(self, ids: list[str]) -> dict[str, asyncpg.Record]:
        async def fetch():
            conn = await asyncpg.connect(self.database_url)
            try:
                jobs = await conn.fetch(
                    "SELECT id, status, attempts FROM transcription_jobs WHERE id = ANY($1::uuid[])",
                    [uuid.UUID(i) for i in ids],
                )
                completions = await conn.fetch(
                    "SELECT job_id, count(*) AS n FROM webhook_deliveries "
                    "WHERE event = 'job.completed' AND delivered AND job_id = ANY($1::uuid[]) GROUP BY job_id",
                    [uuid.UUID(i) for i in ids],
                )
            finally:
                await conn.close()
            return {str(r["id"]): r for r in jobs}, {str(r["job_id"]): r["n"] for r in completions}

        return asyncio.run(fetch())


def _print_tails(*logs: Path, lines: int = 40) -> None:
    for log in logs:
        try:
            tail = log.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            continue
        print(f"---- {log.name} (last {len(tail)} lines) ----", *tail, sep="\n")


def _wait(what: str, check, timeout: float, every: float = 1.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except AssertionError:
            raise
        except Exception as exc:  # not up yet
            last = exc
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout} s (last: {last!r})")


def _config(cluster_args: dict, port: int) -> dict:
    """serve_config.yaml, as a cluster operator would adapt it."""
    config = yaml.safe_load((REPO / "serve_config.yaml").read_text())
    config["proxy_location"] = "HeadOnly"
    config["http_options"]["port"] = port
    app = config["applications"][0]
    app["args"] = {**app["args"], **cluster_args}
    return config


@pytest.fixture(scope="module")
def cluster(keyed_dsn, s3_server, tmp_path_factory):
    work = tmp_path_factory.mktemp("cluster")
    token = secrets.token_hex(32)
    env = {
        **os.environ,
        # Ray's token auth on both nodes and for `serve deploy`, as docs/OPERATIONS.md asks of
        # a cluster: without the token, no one reaches the GCS or the dashboard.
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
        "PYTHONPATH": str(REPO),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "RAY_USAGE_STATS_ENABLED": "0",
        # A node that dies is declared dead in ~3 s, not Ray's 15-30 s (every 3 s, 10 s
        # timeout, 5 failures): the kill test waits for it, and a test cluster has no flaky network.
        "RAY_health_check_initial_delay_ms": "1000",
        "RAY_health_check_period_ms": "1000",
        "RAY_health_check_timeout_ms": "1000",
        "RAY_health_check_failure_threshold": "3",
    }
    env.pop("RAY_ADDRESS", None)
    env.pop("RAY_AUTH_TOKEN_PATH", None)
    gcs, dashboard, http = free_port(), free_port(), free_port()
    # Ray's files in a folder of this cluster's own (short: Unix socket paths are bounded), so that
    # nothing else on the box (a `serve run`, ray.init() with no address) finds it and joins it.
    ray_dir = Path(tempfile.mkdtemp(prefix="stt-ray-", dir="/tmp"))

    def ports() -> list[str]:  # each node's own: they share this machine
        names = ["dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port"]
        return [arg for name in [*names, "metrics-export-port"] for arg in (f"--{name}", str(free_port()))]

    head = Node(
        "head",
        ["--head", f"--port={gcs}", f"--temp-dir={ray_dir}", "--num-cpus=4", '--resources={"cpu_work": 4}']
        + ["--include-dashboard=true"]
        + [f"--dashboard-port={dashboard}", f"--ray-client-server-port={free_port()}", *ports()],
        env,
        work / "head.log",
    )
    worker = Node(
        "worker",
        [f"--address=127.0.0.1:{gcs}", "--num-cpus=2", '--resources={"transcriber": 1}', *ports()],
        env,
        work / "worker.log",
    )
    receiver = WebhookReceiver()
    running = Cluster(
        f"http://127.0.0.1:{http}",
        f"http://127.0.0.1:{dashboard}",
        keyed_dsn,
        head,
        worker,
        receiver,
        ray_token=token,
        gcs=f"127.0.0.1:{gcs}",
    )
    up = False
    try:
        head.start_until_up()
        _wait("the head's dashboard", lambda: running.control("/api/version").is_success, 120)
        worker.start_until_up()
        nodes = _wait("two nodes", lambda: len(running.alive_nodes()) == 2 and running.alive_nodes(), 120)
        for node in nodes:
            (head if node["is_head_node"] else worker).node_id = node["node_id"]
        config = _config(
            {
                "profile": "cluster",
                "models": ["tiny.en"],
                "diarization": False,  # not what this tier is about: one replica fewer to start
                "warmup": False,  # nor is the first request's speed: a decode per worker spared
                "database_url": keyed_dsn,
                "blob_url": f"s3://{s3_server['bucket']}/cluster",
                "s3_endpoint_url": s3_server["endpoint"],
                "s3_region": "us-east-1",
                "s3_access_key": "testing",
                "s3_secret_key": "testing",
                "lease_seconds": 6,
                "worker_poll_seconds": 1,
                "webhook_secret": WEBHOOK_SECRET,
                "webhook_allow_hosts": ["127.0.0.1"],
                "webhook_backoff_seconds": 0.2,
            },
            http,
        )
        path = work / "serve_config.yaml"
        path.write_text(yaml.safe_dump(config))
        deployed = subprocess.run(
            [str(BIN / "serve"), "deploy", str(path), "--address", running.dashboard],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert deployed.returncode == 0, deployed.stderr[-3000:]
        _wait("the app RUNNING", lambda: running.application().get("status") == "RUNNING", 600, every=3)
        # RUNNING is Serve's word; an Ingress replica serves a model once it has seen the
        # model's replica (a CI run's first sync request got 503 model_unavailable from one that
        # had not yet; the Ingress now waits up to 15 s for a model it has never seen running,
        # tests/unit/test_replica_watch.py). Wait, up to a minute, until /api/v1/ready has
        # answered 200 on twelve fresh connections in a row (the head spreads connections over
        # the Ingress replicas).
        # Not a check in itself: the tests below assert what they need.
        try:
            _wait("ready on twelve connections in a row", running.ready_in_a_row, 60, every=0.5)
        except AssertionError as exc:
            print(exc)
        up = True
        yield running
    finally:
        if not up:  # what the nodes said, before their files go
            _print_tails(work / "head.log", work / "worker.log", *ray_dir.glob("session_latest/logs/dashboard.*"))
        receiver.close()
        try:
            worker.stop()
        finally:
            head.stop()
            shutil.rmtree(ray_dir, ignore_errors=True)  # its session, sockets and the note of its address


def test_transcribers_run_on_the_worker_node_and_the_rest_on_the_head(cluster):
    transcribers = cluster.replicas("Transcriber-tiny-en")
    assert transcribers and all(a["node_id"] == cluster.worker.node_id for a in transcribers)
    for deployment in ("Preprocessor", "JobWorker"):  # cpu_work: the head's
        replicas = cluster.replicas(deployment)
        assert replicas and all(a["node_id"] == cluster.head.node_id for a in replicas), deployment
    assert len(cluster.replicas("Ingress")) >= 2  # the cluster profile's minimum
    # serve status (Serve's REST API) says the same deployments run
    deployments = cluster.application()["deployments"]
    assert {"Ingress", "Preprocessor", "JobWorker", "Transcriber-tiny-en"} <= set(deployments)
    assert all(d["status"] == "HEALTHY" for d in deployments.values())


def test_the_control_plane_refuses_whoever_lacks_the_token(cluster):
    """The dashboard (its job-submission API runs code) and the GCS answer only the token."""
    for path in ("/api/serve/applications/", "/api/v0/nodes", "/api/jobs/"):
        assert httpx.get(f"{cluster.dashboard}{path}", timeout=30).status_code == 401, path
        wrong = {"Authorization": "Bearer " + "0" * 64}
        assert httpx.get(f"{cluster.dashboard}{path}", headers=wrong, timeout=30).status_code == 403, path
    # A driver with a wrong token cannot join (in a process of its own: Ray's client state is
    # process-wide).
    env = {**cluster.head.env, "RAY_AUTH_TOKEN": "0" * 64}
    joined = subprocess.run(
        [sys.executable, "-c", f"import ray; ray.init(address={cluster.gcs!r}); print('JOINED')"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "JOINED" not in joined.stdout and joined.returncode != 0, joined.stdout[-2000:]


def _submit(client, name: str, hook: str) -> str:
    response = client.post(
        "/api/v1/transcriptions",
        files={"file": (name, audio(name))},
        data={"sync": "false", "webhook_url": hook},
    )
    assert response.status_code == 202, response.text
    return response.json()["id"]


def _finished(cluster, ids: list[str]) -> dict[str, dict]:
    with cluster.client() as client:
        bodies = {i: client.get(f"/api/v1/transcriptions/{i}").json() for i in ids}
    return bodies if all(b["status"] in ("COMPLETED", "FAILED") for b in bodies.values()) else {}


def test_requests_through_the_head_succeed_and_async_jobs_complete(cluster):
    with cluster.client() as client:
        response = client.post("/api/v1/transcriptions", files={"file": ("a.wav", audio("harvard_01.wav"))})
        assert response.status_code == 200, response.text
        assert wer(transcripts()["harvard_01.wav"], response.json()["text"]) < 25
        ids = [_submit(client, name, cluster.receiver.url) for name in ("harvard_02.wav", "harvard_03.wav")]
    done = _wait("two async jobs", lambda: _finished(cluster, ids), 180)
    for job_id, name in zip(ids, ("harvard_02.wav", "harvard_03.wav")):
        assert done[job_id]["status"] == "COMPLETED", done[job_id]
        assert wer(transcripts()[name], done[job_id]["result"]["text"]) < 25


def test_killing_the_worker_node_loses_no_accepted_job_and_runs_none_twice(cluster):
    names = [f"harvard_0{i % 8 + 1}.wav" if i % 4 else "harvard_long.flac" for i in range(8)]
    with cluster.client() as client:
        ids = [_submit(client, name, cluster.receiver.url) for name in names]
        _wait(
            "a job running",
            lambda: any(client.get(f"/api/v1/transcriptions/{i}").json()["status"] == "PROCESSING" for i in ids),
            60,
            every=0.1,
        )
    killed = cluster.worker.kill()
    assert killed >= 3  # ray start, the raylet and its agents, the replicas on the node

    # While the node is gone a sync request may fail, but with a 503 and soon, not a hang:
    # once Serve sees the Transcriber gone, the Ingress refuses at once. (A request that got past
    # the Ingress's check just before that waits in the Transcriber's handle for a new replica:
    # probes give up on it after 10 s and ask again.)
    def refused() -> bool:
        with cluster.client(timeout=10) as client:
            started = time.monotonic()
            response = client.post("/api/v1/transcriptions", files={"file": ("a.wav", audio("harvard_01.wav"))})
        if response.status_code == 503:
            assert response.json()["error"]["code"] in ("model_unavailable", "overloaded"), response.text
            assert response.headers.get("retry-after")
            return time.monotonic() - started < 5
        assert response.status_code in (200, 503), response.text
        return False

    _wait("a quick 503 while the worker node is gone", refused, 180, every=2)
    with cluster.client() as client:
        assert client.get("/api/v1/health").json()["status"] == "degraded"

    cluster.worker.start_until_up()  # the node comes back; Serve places the Transcriber on it again
    done = _wait("every accepted job", lambda: _finished(cluster, ids), 600, every=2)
    rows, completions = cluster.rows(ids)
    assert len(rows) == len(ids)
    for job_id, name in zip(ids, names):
        body = done[job_id]
        assert body["status"] == "COMPLETED", body
        assert wer(transcripts()[name], body["result"]["text"]) < 25, (name, body["result"]["text"])
        assert rows[job_id]["status"] == "COMPLETED" and rows[job_id]["attempts"] <= 3
        assert completions.get(job_id) == 1, (job_id, completions.get(job_id))  # completed once
    delivered = [d["json"]["id"] for d in cluster.receiver.deliveries if d["json"]["event"] == "job.completed"]
    assert sorted(set(delivered) & set(ids)) == sorted(ids)
    assert all(delivered.count(i) == 1 for i in ids)  # no job's completion was sent twice
    retried = sum(1 for i in ids if rows[i]["attempts"] > 1)
    print(json.dumps({"accepted": len(ids), "completed": len(ids), "completed_twice": 0, "retried": retried}))

    def served() -> httpx.Response | None:
        with cluster.client() as client:
            response = client.post("/api/v1/transcriptions", files={"file": ("a.wav", audio("harvard_04.wav"))})
        return response if response.status_code == 200 else None

    response = _wait("a sync request after the node came back", served, 120, every=2)  # sync works again
    assert wer(transcripts()["harvard_04.wav"], response.json()["text"]) < 25
