"""The ``stt`` command: run the service, prepare models."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time


def _prepare_models(names: list[str] | None = None) -> None:
    from serve_app.catalog import ModelCatalog
    from serve_app.settings import Settings

    settings = Settings()
    catalog = ModelCatalog.load(settings.catalog_path, settings.cache_dir)
    for name in names or settings.models:
        print(f"{name}: {catalog.resolve(name)}")


def _serve(args: argparse.Namespace) -> None:
    import ray
    from ray import serve

    from deployments.app import APP_NAME, build_app
    from serve_app.settings import Settings

    settings = Settings()
    _prepare_models()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # Ray starts its workers at nice 15, below every ordinary process (PostgreSQL, clients on
    # the same box): the proxy and the Ingress then queue behind them. A local cluster runs its
    # workers at normal priority instead; the Transcribers lower their own decode threads
    # (profile `nice`), so decoding takes only what the API leaves.
    os.environ.setdefault("RAY_worker_niceness", "0")
    # A local cluster picks a free GCS port (never Redis's 6379); RAY_ADDRESS joins an existing one.
    ray.init(
        address=os.environ.get("RAY_ADDRESS"),
        include_dashboard=False,
        log_to_driver=args.verbose,
        runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}},
    )
    serve.start(http_options={"host": settings.host, "port": settings.port})
    serve.run(build_app({}), name=APP_NAME, route_prefix="/", blocking=False)
    print(f"speechtotext is serving on http://{settings.host}:{settings.port} (Ctrl-C stops it)", flush=True)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    try:
        while not stop:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    serve.shutdown()
    ray.shutdown()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="stt", description="speechtotext service")
    sub = parser.add_subparsers(dest="command", required=True)
    serve_cmd = sub.add_parser("serve", help="start Ray Serve with the app (settings from STT_*)")
    serve_cmd.add_argument("-v", "--verbose", action="store_true", help="show replica logs")
    prep = sub.add_parser("prepare-models", help="assemble the catalog's local model files")
    prep.add_argument("models", nargs="*")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "serve":
        _serve(args)
    elif args.command == "prepare-models":
        _prepare_models(args.models or None)
    else:  # pragma: no cover
        parser.error(args.command)
    sys.exit(0)


if __name__ == "__main__":
    main()
