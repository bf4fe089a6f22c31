"""The REST API for batches: many files (uploads, or objects already in the store) as one unit."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Request, Response, UploadFile
from fastapi.responses import JSONResponse, StreamingResponse

from serve_app.api.dependencies import Caller, Context, TranscribingCaller
from serve_app.api.routers.transcriptions import _ERRORS, DownloadFormat, Options, Tenant, accepted, attachment
from serve_app.core.errors import InvalidParameter
from serve_app.core.formats import BY_EXTENSION

router = APIRouter(prefix="/api/v1", tags=["batches"])


@router.post("/batches", responses=_ERRORS, status_code=202)
async def create_batch(
    request: Request,
    ctx: Context,
    caller: TranscribingCaller,
    asked: Options,
    files: Annotated[list[UploadFile] | None, File(description="Audio files; repeat the field.")] = None,
    keys: Annotated[
        list[str] | None, Form(description="Keys of objects already in the store, under inbox/<tenant>/.")
    ] = None,
    webhook_url: Annotated[str | None, Form(description="POSTed once, when the whole batch has ended.")] = None,
):
    """Every file becomes an async job of the batch, with the same options; 202 with the
    batch id once all are stored and queued (longest first)."""
    service = ctx.service
    resolved = await accepted(ctx, request, asked, webhook_url)
    if files and keys:
        raise InvalidParameter("Send files or keys, not both.", param="keys")
    extra = {"webhook_url": webhook_url or None, "request_id": request.state.request_id}
    if keys:
        batch = await ctx.batches_for(caller).submit_keys(caller.tenant, keys, resolved.job_spec(), **extra)
    else:
        uploads = [service.upload(f) for f in files or []]
        batch = await ctx.batches_for(caller).submit_uploads(caller.tenant, uploads, resolved.job_spec(), **extra)
    location = f"/api/v1/batches/{batch['id']}"
    body = batch | {"status": "PENDING", "links": {"self": location, "download": f"{location}/download"}}
    return JSONResponse(body, 202, headers={"Location": location})


@router.get("/batches/{batch_id}", responses=_ERRORS)
async def get_batch(ctx: Context, caller: Caller, batch_id: str, tenant: Tenant = None) -> dict:
    """Per-file status and an aggregate; the batch's status from its files' (PENDING,
    PROCESSING, then COMPLETED, FAILED, or PARTIAL when some failed)."""
    row, jobs = await ctx.batches.get(batch_id, None if caller.is_admin else caller.tenant)
    return ctx.batches.view(row, jobs)


@router.get("/batches/{batch_id}/download", responses=_ERRORS)
async def download_batch(
    ctx: Context, caller: Caller, batch_id: str, format: Annotated[DownloadFormat, Query()] = "txt"
) -> Response:
    """A zip of every finished transcript in ``format`` (failed files listed in ERRORS.txt)."""
    _, jobs = await ctx.batches.get(batch_id, None if caller.is_admin else caller.tenant)
    body = ctx.batches.zip(jobs, BY_EXTENSION.get(format, format))
    headers = {"Content-Disposition": attachment(f"batch-{batch_id}.zip")}
    return StreamingResponse(body, media_type="application/zip", headers=headers)


@router.delete("/batches/{batch_id}", status_code=204, responses=_ERRORS)
async def delete_batch(ctx: Context, caller: Caller, batch_id: str) -> Response:
    """The batch, its jobs, their audio and results."""
    await ctx.batches.delete(batch_id, caller.tenant)
    return Response(status_code=204)
