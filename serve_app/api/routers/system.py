"""Service endpoints: health (liveness), readiness, the models served, the languages each one knows."""

from __future__ import annotations

from fastapi import APIRouter

from serve_app.api.dependencies import Context
from serve_app.api.schemas import ModelInfo
from serve_app.core.errors import NotReady

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
    problems = ctx.service.backend.problems()
    if problems:
        body["problems"] = problems
    if missing or problems or body.get("database") == "unavailable":
        body["status"] = "degraded"
    return body


@router.get("/ready", responses={503: {"description": "Not ready yet: what it waits for"}})
async def ready(ctx: Context) -> dict:
    """Readiness: 200 once every served model and the preprocessor have a running replica
    (replicas warm up before they run) and the database answers; until then 503
    ``not_ready``, naming what is missing. For load balancers and start-up scripts."""
    waiting = await ctx.service.backend.not_ready()
    if ctx.service.jobs is not None and not await ctx.service.jobs.store.ping():
        waiting.append("database")
    if waiting:
        raise NotReady("not ready: waiting for " + ", ".join(waiting))
    return {"status": "ready", "models": ctx.served}


@router.get("/models")
async def models(ctx: Context) -> dict[str, list[ModelInfo]]:
    return {"models": [ctx.model_info(name) for name in ctx.served]}


@router.get("/languages")
async def languages(ctx: Context) -> dict:
    per_model = {name: ctx.service.catalog.get(name).languages for name in ctx.served}
    everything = sorted({code for codes in per_model.values() for code in codes})
    return {"languages": everything, "models": per_model}
