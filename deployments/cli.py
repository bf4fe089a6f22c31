"""The ``stt`` command: start Ray and serve the app, prepare models.

Next to the Ray wiring because it starts Ray; serve_app stays importable without it.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import time


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


def local_cluster_env(proxy: str = "haproxy", *, free_ports: bool = False) -> None:
    """Environment for a Ray cluster this process starts (``make run``, the bench, the tests).

    Set before ``ray.init``: the local raylet, Serve controller and replicas inherit it.
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
    if proxy == "haproxy":
        # HAProxy (its binary ships with ray[serve]) forwards each request straight to the
        # Ingress replica's own HTTP server instead of through the Python proxy actor: health
        # idle 12 -> 3 ms p50 on 2 cores, and the proxy's CPU goes to the models.
        os.environ.setdefault("RAY_SERVE_ENABLE_HA_PROXY", "1")
        os.environ.setdefault("RAY_SERVE_HAPROXY_NBTHREAD", "1")
        # HAProxy answers a request whose headers overflow its buffer (16 KB by default) with
        # its own HTML 400 page. With room for 128 KB such a request reaches the Ingress,
        # which refuses headers over 32 KB with the JSON error shape (431).
        os.environ.setdefault("RAY_SERVE_HAPROXY_TUNE_BUFSIZE", str(128 * 1024))
        if free_ports:  # a second instance on the box (tests, bench) must not take 9101/8404
            os.environ.setdefault("RAY_SERVE_HAPROXY_METRICS_PORT", str(free_port()))
            os.environ.setdefault("RAY_SERVE_HAPROXY_STATS_PORT", str(free_port()))


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
    if not os.environ.get("RAY_ADDRESS"):
        local_cluster_env(settings.proxy)
    # A local cluster picks a free GCS port (never Redis's 6379); RAY_ADDRESS joins an existing one.
    local = not os.environ.get("RAY_ADDRESS")
    ray.init(
        # "local": a cluster of its own even when another runs on the box (ray start)
        address=os.environ.get("RAY_ADDRESS") or "local",
        include_dashboard=False,
        log_to_driver=args.verbose,
        runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}},
        **({"_metrics_export_port": settings.metrics_port or None} if local else {}),
    )
    serve.start(http_options={"host": settings.host, "port": settings.port})
    serve.run(build_app({}), name=APP_NAME, route_prefix="/", blocking=False)
    print(f"speechtotext is serving on http://{settings.host}:{settings.port} (Ctrl-C stops it)", flush=True)
    if local and settings.metrics_port:
        print(f"Prometheus metrics on port {settings.metrics_port} (/metrics)", flush=True)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    try:
        while not stop:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    serve.shutdown()
    ray.shutdown()


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
    parser = argparse.ArgumentParser(prog="stt", description="speechtotext service")
    sub = parser.add_subparsers(dest="command", required=True)
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
