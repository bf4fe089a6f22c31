"""Service endpoints: health, the models served, the languages each one knows."""

from __future__ import annotations

from fastapi import APIRouter

from serve_app.api.dependencies import Context
from serve_app.schemas import ModelInfo

router = APIRouter(prefix="/api/v1", tags=["service"])


@router.get("/health")
async def health(ctx: Context) -> dict:
    """Liveness (always 200 while this replica answers): ``status`` is ``degraded`` while the
    database or a model is unavailable."""
    body = {"status": "ok", "models": ctx.served, "device": ctx.settings.resolved_device}
    if ctx.service.jobs is not None:
        # Sync transcription needs the database too (every request is recorded as a job).
        body["database"] = "ok" if await ctx.service.jobs.store.ping() else "unavailable"
    missing = sorted(ctx.service.backend.unavailable())
    if missing:
        body["unavailable_models"] = missing
    if missing or body.get("database") == "unavailable":
        body["status"] = "degraded"
    return body


@router.get("/models")
async def models(ctx: Context) -> dict[str, list[ModelInfo]]:
    return {"models": [ctx.model_info(name) for name in ctx.served]}


@router.get("/languages")
async def languages(ctx: Context) -> dict:
    per_model = {name: ctx.service.catalog.get(name).languages for name in ctx.served}
    everything = sorted({code for codes in per_model.values() for code in codes})
    return {"languages": everything, "models": per_model}
