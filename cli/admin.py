"""`stt keys ...` and `stt tenants ...`: API keys and tenant limits, straight on the configured
database (STT_DATABASE_URL, or the embedded one in STT_DATA_DIR). No Ray, no running service."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import datetime, timedelta, timezone

import click

SPANS = {"d": "days", "h": "hours", "m": "minutes"}


class Expiry(click.ParamType):
    """``--expires``: an ISO date or time (UTC unless it says), or a span from now: 90d, 12h, 30m."""

    name = "date|span"

    def convert(self, value, param, ctx) -> datetime:
        if isinstance(value, datetime):
            return value
        if value[:-1].isdigit() and value[-1:] in SPANS:
            return datetime.now(timezone.utc) + timedelta(**{SPANS[value[-1]]: int(value[:-1])})
        try:
            stamp = datetime.fromisoformat(value)
        except ValueError:
            self.fail(f"not a date, time or span (90d, 12h, 30m): {value!r}", param, ctx)
        return stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)


def on_database(work) -> None:
    """Run ``work(keys)`` (a coroutine function taking a KeyStore) on the configured database;
    exit 0, or 1 with the service's message on stderr."""
    from serve_app.core.errors import ServiceError
    from serve_app.core.settings import Settings
    from serve_app.jobs.database import database_url
    from serve_app.jobs.store import JobStore
    from serve_app.tenancy.keys import KeyStore

    async def run() -> int:
        store = JobStore(database_url(Settings()), min_size=0, max_size=1)
        try:
            return await work(KeyStore(store)) or 0
        except ServiceError as exc:
            click.echo(f"error: {exc.message}", err=True)
            return 2
        finally:
            await store.close()

    sys.exit(asyncio.run(run()))


@click.group()
def keys() -> None:
    """API keys in the configured database."""


@keys.command("create")
@click.option("--tenant", required=True)
@click.option("--role", type=click.Choice(["user", "admin"]), default="user", show_default=True)
@click.option("--name", default="", help="What the key is for.")
@click.option("--expires", type=Expiry(), help="ISO date/time, or a span: 90d, 12h, 30m.")
@click.option("--json", "as_json", is_flag=True)
def keys_create(tenant, role, name, expires, as_json) -> None:
    """Make a key; prints it (only this once)."""

    async def work(store) -> None:
        key, full = await store.create(tenant, role=role, name=name, expires_at=expires)
        click.echo(json.dumps({**key.public(), "key": full}, indent=2) if as_json else full)
        if not as_json:
            click.echo(f"(key {key.id} of tenant {key.tenant}, role {key.role}: shown only now)", err=True)

    on_database(work)


@keys.command("list")
@click.option("--tenant")
@click.option("--json", "as_json", is_flag=True)
def keys_list(tenant, as_json) -> None:
    """Keys (never their secrets)."""

    async def work(store) -> None:
        found = [k.public() for k in await store.list(tenant)]
        if as_json:
            click.echo(json.dumps(found, indent=2))
            return
        for k in found:
            state = "revoked" if k["revoked_at"] else "active"
            click.echo(
                f"{k['id']}  {k['tenant']:<20} {k['role']:<6} {state:<8} expires={k['expires_at']} "
                f"last_used={k['last_used_at']} {k['name']}"
            )

    on_database(work)


@keys.command("revoke")
@click.argument("key_id")
def keys_revoke(key_id) -> None:
    """Revoke a key by its id."""

    async def work(store) -> int:
        key = await store.revoke(key_id)
        if key is None:
            click.echo(f"no key {key_id!r}", err=True)
            return 1
        click.echo(f"revoked {key.id} (tenant {key.tenant}); every replica refuses it within seconds")
        return 0

    on_database(work)


@click.group()
def tenants() -> None:
    """Tenant limits."""


@tenants.command("limits")
@click.argument("tenant")
@click.option("--requests-per-minute", type=click.IntRange(min=0))
@click.option("--max-concurrent", type=click.IntRange(min=0))
@click.option("--audio-hours-per-day", type=click.FloatRange(min=0))
@click.option("--max-queued", type=click.IntRange(min=0))
@click.option("--storage-gb", type=click.FloatRange(min=0))
def tenants_limits(tenant, **given) -> None:
    """Show a tenant's limits, or set them (0: none; unset: the default)."""
    from serve_app.tenancy.limits import Limits

    async def work(store) -> None:
        limits = await store.limits(tenant)
        if any(v is not None for v in given.values()):  # the limits not given stay as they are
            merged = limits.__dict__ | {k: v for k, v in given.items() if v is not None}
            limits = await store.set_limits(tenant, Limits(**merged))
        click.echo(json.dumps({"tenant": tenant, **limits.__dict__}))

    on_database(work)
