"""The `stt` command: one click group for every command.

`stt serve` and `stt prepare-models` run the service on this machine; `stt keys` and
`stt tenants` administer the database directly (no Ray, no running service); `stt transcribe`,
`stt jobs`, `stt models` and `stt health` are clients of a running service over HTTP.
Heavy imports (Ray, the models) happen inside the commands that need them, so the client
commands start at once.
"""

from __future__ import annotations

import logging
import sys

import click

from cli.admin import keys, tenants
from cli.client import Failed, health, jobs, models, transcribe


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def stt() -> None:
    """speechtotext: serve it, administer it, or talk to a running service
    (default http://127.0.0.1:8000)."""


@stt.command()
@click.option("-v", "--verbose", is_flag=True, help="Show the replicas' logs on this terminal.")
def serve(verbose: bool) -> None:
    """Start Ray Serve with the app on this machine (settings from STT_*); Ctrl-C stops it."""
    from deployments.local_cluster import serve_locally

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    serve_locally(verbose)


@stt.command("prepare-models")
@click.argument("names", nargs=-1)
def prepare_models(names: tuple[str, ...]) -> None:
    """Assemble the catalog's local model files (default: the served models, STT_MODELS)."""
    from serve_app.asr.catalog import ModelCatalog
    from serve_app.core.settings import Settings

    settings = Settings()
    catalog = ModelCatalog.load(settings.catalog_path, settings.cache_dir)
    for name, path in catalog.prepare(names or settings.models).items():
        click.echo(f"{name}: {path}")


for command in (keys, tenants, transcribe, jobs, models, health):
    stt.add_command(command)


def main(argv: list[str] | None = None) -> None:
    """The console script: exit 0; 1 when a file failed; 2 when the service cannot be reached
    or refuses; 130 when interrupted."""
    try:
        stt.main(args=sys.argv[1:] if argv is None else argv, prog_name="stt", standalone_mode=False)
    except Failed as exc:
        click.echo(f"stt: {exc}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("stt: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    sys.exit(0)


if __name__ == "__main__":
    main()
