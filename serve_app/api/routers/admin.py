"""Admin routes: API keys and tenant limits (admin keys only)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from serve_app.api.dependencies import AdminCaller, Context
from serve_app.api.schemas import ErrorResponse
from serve_app.core.errors import JobNotFound
from serve_app.tenancy.keys import check_tenant
from serve_app.tenancy.limits import Limits

router = APIRouter(prefix="/api/v1/admin", tags=["admin"])
_ERRORS = {code: {"model": ErrorResponse} for code in (401, 403, 404, 422, 429, 503)}


class NewKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant: str = Field(max_length=64)
    role: Literal["user", "admin"] = "user"
    name: str = Field("", max_length=200)
    expires_at: datetime | None = None


class TenantLimits(BaseModel):
    """A tenant's limits; null: the service's default; 0: no limit."""

    model_config = ConfigDict(extra="forbid")

    requests_per_minute: int | None = Field(None, ge=0, le=1_000_000)
    max_concurrent: int | None = Field(None, ge=0, le=100_000)
    audio_hours_per_day: float | None = Field(None, ge=0, le=1_000_000)
    max_queued: int | None = Field(None, ge=0, le=10_000_000)
    storage_gb: float | None = Field(None, ge=0, le=1_000_000)


@router.post("/keys", status_code=201, responses=_ERRORS)
async def create_key(ctx: Context, caller: AdminCaller, body: NewKey) -> dict:
    """A new key; ``key`` in the answer is the whole key, shown this once and never again."""
    key, full = await ctx.key_store().create(body.tenant, role=body.role, name=body.name, expires_at=body.expires_at)
    return {**key.public(), "key": full}


@router.get("/keys", responses=_ERRORS)
async def list_keys(
    ctx: Context, caller: AdminCaller, tenant: Annotated[str | None, Query(max_length=64)] = None
) -> dict:
    if tenant is not None:
        check_tenant(tenant)
    return {"keys": [k.public() for k in await ctx.key_store().list(tenant)]}


@router.delete("/keys/{key_id}", status_code=204, responses=_ERRORS)
async def revoke_key(ctx: Context, caller: AdminCaller, key_id: str) -> Response:
    """Revoke a key: refused on this replica at once, on every other within the key cache's time."""
    key = await ctx.key_store().revoke(key_id[:64])
    if key is None:
        raise JobNotFound(f"No API key '{key_id[:64]}'.", code="key_not_found")
    ctx.auth.forget(key.id)
    return Response(status_code=204)


@router.get("/tenants/{tenant}/limits", responses=_ERRORS)
async def get_limits(ctx: Context, caller: AdminCaller, tenant: str) -> dict:
    check_tenant(tenant)
    own = await ctx.key_store().limits(tenant)
    return {"tenant": tenant, "limits": own.__dict__, "effective": own.over(ctx.auth.defaults).__dict__}


@router.put("/tenants/{tenant}/limits", responses=_ERRORS)
async def set_limits(ctx: Context, caller: AdminCaller, tenant: str, body: TenantLimits) -> dict:
    """Takes effect on each replica when it next looks the tenant's keys up (within seconds)."""
    check_tenant(tenant)
    own = await ctx.key_store().set_limits(tenant, Limits(**body.model_dump()))
    return {"tenant": tenant, "limits": own.__dict__, "effective": own.over(ctx.auth.defaults).__dict__}
