"""A tenant's webhook secret: read it (to verify deliveries) and rotate it."""

from __future__ import annotations

from fastapi import APIRouter

from serve_app.api.dependencies import Caller, Context
from serve_app.api.routers.transcriptions import _ERRORS, webhook_master_secret
from serve_app.jobs import webhook_secrets
from serve_app.jobs.webhooks import tenant_secret

router = APIRouter(prefix="/api/v1", tags=["service"])


@router.get("/webhook-secret", responses=_ERRORS)
async def webhook_secret(ctx: Context, caller: Caller) -> dict:
    """The secret this tenant's webhooks are signed with now (Standard Webhooks' ``whsec_``
    form; derived per tenant and generation, never stored)."""
    master = webhook_master_secret(ctx)
    generation, _ = await webhook_secrets.current(ctx.jobs.store, caller.tenant)
    return {
        "tenant": caller.tenant,
        "generation": generation,
        "secret": tenant_secret(master, caller.tenant, generation),
    }


@router.post("/webhook-secret/rotate", responses=_ERRORS)
async def rotate_webhook_secret(ctx: Context, caller: Caller) -> dict:
    """Start a new secret. For a day, deliveries carry signatures by both the new and the
    previous secret, so a receiver can switch without losing one; then only the new one."""
    master = webhook_master_secret(ctx)
    generation = await webhook_secrets.rotate(ctx.jobs.store, caller.tenant)
    return {
        "tenant": caller.tenant,
        "generation": generation,
        "secret": tenant_secret(master, caller.tenant, generation),
        "previous_signs_until_s": int(webhook_secrets.OVERLAP.total_seconds()),
    }
