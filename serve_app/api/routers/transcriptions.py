"""The REST API for transcriptions: /api/v1/transcriptions, sync and async jobs."""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, File, Form, Query, Request, Response, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from serve_app.api.dependencies import Caller, Context, ServiceContext, TranscribingCaller
from serve_app.api.schemas import ErrorResponse, JobAccepted, JobPage, JobView
from serve_app.core.bounds import STATUSES
from serve_app.core.errors import InvalidParameter, JobNotFinished, JobNotFound
from serve_app.core.formats import BY_EXTENSION, EXTENSIONS, FORMATS, MEDIA_TYPES, RENDERERS, Format
from serve_app.core.results import TranscriptionResult
from serve_app.jobs.blobs import BlobNotFound
from serve_app.jobs.webhook_targets import check_webhook_url
from serve_app.tenancy.keys import Principal
from serve_app.transcription.request import TranscriptionRequest

router = APIRouter(prefix="/api/v1", tags=["transcriptions"])

ResponseFormat = Format
# A download names its format, or the file extension it wants (txt).
DownloadFormat = Literal[tuple(sorted(set(FORMATS) | set(EXTENSIONS.values())))]  # type: ignore[valid-type]
_ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 409, 413, 415, 422, 429, 503)}
Tenant = Annotated[
    str | None, Query(max_length=64, description="Admin keys: the tenant to read (default: the key's own).")
]


def option(name: str):
    """A form field of a TranscriptionRequest option: described here, validated there (once)."""
    return Form(description=TranscriptionRequest.model_fields[name].description)


def transcription_options(
    model: Annotated[str | None, option("model")] = None,
    quality: Annotated[str | None, option("quality")] = None,
    language: Annotated[str | None, option("language")] = None,
    task: Annotated[str, Form(description="transcribe, or translate (to English)")] = "transcribe",
    beam_size: Annotated[int | None, option("beam_size")] = None,
    prompt: Annotated[str | None, option("prompt")] = None,
    temperature: Annotated[float, option("temperature")] = 0.0,
    timestamps: Annotated[bool, option("timestamps")] = False,
    word_timestamps: Annotated[bool, option("word_timestamps")] = False,
    normalize: Annotated[bool, option("normalize")] = True,
    vad: Annotated[bool, option("vad")] = True,
    diarize: Annotated[bool, option("diarize")] = False,
    min_speakers: Annotated[int | None, option("min_speakers")] = None,
    max_speakers: Annotated[int | None, option("max_speakers")] = None,
) -> TranscriptionRequest:
    """The options of a transcription from form fields (a single one, or each file of a batch)."""
    return TranscriptionRequest.parse(
        model=model,
        quality=quality,
        language=language,
        task=task,
        beam_size=beam_size,
        prompt=prompt,
        temperature=temperature,
        timestamps=timestamps,
        word_timestamps=word_timestamps,
        normalize=normalize,
        vad=vad,
        diarize=diarize,
        min_speakers=min_speakers,
        max_speakers=max_speakers,
    )


Options = Annotated[TranscriptionRequest, Depends(transcription_options)]


def render(result: TranscriptionResult, fmt: str) -> Response:
    """The result in a format, named by itself or by its file extension (txt)."""
    fmt = BY_EXTENSION.get(fmt, fmt)
    if fmt == "json":
        return JSONResponse(result.model_dump(mode="json"))
    return PlainTextResponse(RENDERERS[fmt](result.segments), media_type=MEDIA_TYPES[fmt])


def attachment(filename: str) -> str:
    """A Content-Disposition for any file name (RFC 6266): an ASCII fallback, and the real name
    percent-encoded as UTF-8 in ``filename*``."""
    fallback = "".join(ch if ch.isascii() and ch.isprintable() and ch not in '"\\' else "_" for ch in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


@router.post(
    "/transcriptions",
    responses=_ERRORS,
    response_model=TranscriptionResult,
    status_code=200,
)
async def create_transcription(
    request: Request,
    ctx: Context,
    caller: TranscribingCaller,
    file: Annotated[UploadFile, File(description="Audio in any common container.")],
    asked: Options,
    response_format: Annotated[ResponseFormat, Form()] = "json",
    sync: Annotated[bool, Form(description="Wait for the result (true) or get a job id (false).")] = True,
    webhook_url: Annotated[str | None, Form(description="POSTed when an async job ends.")] = None,
):
    service = ctx.service
    resolved = await accepted(ctx, request, asked, webhook_url)
    upload = service.upload(file)

    if not sync:
        job = await service.submit(
            resolved, upload, caller=caller, webhook_url=webhook_url or None, request_id=request.state.request_id
        )
        body = JobAccepted(
            id=str(job.id),
            status=job.status,
            created_at=job.created_at,
            links={"self": f"/api/v1/transcriptions/{job.id}", "download": f"/api/v1/transcriptions/{job.id}/download"},
        )
        return JSONResponse(body.model_dump(mode="json"), 202, headers={"Location": body.links["self"]})

    result = await service.transcribe(resolved, upload, caller=caller, request_id=request.state.request_id)
    request.state.audio_seconds = round(result.duration, 2)
    return render(result, response_format)


async def accepted(ctx: ServiceContext, request: Request, asked: TranscriptionRequest, webhook_url: str | None):
    """The request resolved against the served models, and its webhook URL checked (one
    transcription or a batch of them)."""
    resolved = ctx.service.resolve(asked)
    request.state.model = resolved.model
    if webhook_url:
        webhook_master_secret(ctx, param="webhook_url")
        await check_webhook_url(webhook_url, ctx.settings.webhook_allow_hosts)
    return resolved


def webhook_master_secret(ctx: ServiceContext, param: str | None = None) -> str:
    """STT_WEBHOOK_SECRET; without it webhooks are off, and asking for one is 422."""
    if not ctx.settings.webhook_secret:
        raise InvalidParameter(
            "Webhooks are off on this service (it has no STT_WEBHOOK_SECRET); poll the job instead.",
            code="webhooks_disabled",
            param=param,
        )
    return ctx.settings.secret("webhook_secret")


async def _find(ctx: ServiceContext, caller: Principal, job_id: str):
    """The caller's job; another tenant's is 404 like one that does not exist (admins see all)."""
    try:
        ident = uuid.UUID(job_id)
    except ValueError:
        raise JobNotFound(f"No transcription job '{job_id}'.") from None
    job = await ctx.jobs.store.get(ident, None if caller.is_admin else caller.tenant)
    if job is None:
        raise JobNotFound(f"No transcription job '{job_id}'.")
    return job


@router.get("/transcriptions", responses=_ERRORS)
async def list_transcriptions(
    ctx: Context,
    caller: Caller,
    tenant: Tenant = None,
    status: Annotated[Literal[STATUSES] | None, Query()] = None,  # type: ignore[valid-type]
    q: Annotated[str | None, Query(max_length=200, description="Words in the file name.")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> JobPage:
    if q is not None and not q.isprintable():
        raise InvalidParameter("q must be printable text (no control characters).", param="q")
    jobs, next_cursor = await ctx.jobs.store.list(
        caller.tenant_for(tenant), status=status, search=q, cursor=cursor, limit=limit
    )
    return JobPage(items=[JobView.from_job(j) for j in jobs], next_cursor=next_cursor)


@router.get("/transcriptions/{job_id}", responses=_ERRORS)
async def get_transcription(ctx: Context, caller: Caller, job_id: str) -> JobView:
    job = await _find(ctx, caller, job_id)
    return JobView.from_job(job, await ctx.jobs.result(job))


@router.delete("/transcriptions/{job_id}", status_code=204, responses=_ERRORS)
async def delete_transcription(ctx: Context, caller: Caller, job_id: str) -> Response:
    job = await _find(ctx, caller, job_id)
    await ctx.jobs.delete(job.id, job.user_id)
    return Response(status_code=204)


@router.get("/transcriptions/{job_id}/download", responses=_ERRORS)
async def download_transcription(
    ctx: Context, caller: Caller, job_id: str, format: Annotated[DownloadFormat, Query()] = "txt"
) -> Response:
    job = await _find(ctx, caller, job_id)
    if job.status == "FAILED":
        raise JobNotFinished(f"Job {job_id} failed ({job.error}); there is nothing to download.")
    result = await ctx.jobs.result(job)
    if result is None:
        raise JobNotFinished(f"Job {job_id} is {job.status}; download it once it is COMPLETED.")
    response = render(result, format)
    ext = EXTENSIONS[BY_EXTENSION.get(format, format)]
    stem = job.original_filename.rsplit(".", 1)[0] or "transcript"
    response.headers["Content-Disposition"] = attachment(f"{stem}.{ext}")
    return response


@router.get(
    "/transcriptions/{job_id}/audio",
    responses=_ERRORS
    | {200: {"content": {"audio/*": {}}, "description": "The uploaded file, as it was sent, as its container's type."}},
)
async def transcription_audio(ctx: Context, caller: Caller, job_id: str) -> StreamingResponse:
    """The audio of an async job, as uploaded (the web page plays it beside the transcript).
    A sync transcription keeps no audio: 404 ``no_audio``."""
    job = await _find(ctx, caller, job_id)
    if not job.audio_key:
        raise JobNotFound(
            f"Job {job_id} ran synchronously; its audio was not kept (async jobs keep theirs).", code="no_audio"
        )
    blobs = ctx.jobs.blobs
    try:
        size = await blobs.size(job.audio_key)
    except BlobNotFound:
        raise JobNotFound(f"The audio of job {job_id} is gone.", code="no_audio") from None
    # The type of the container found when the upload was checked, never one guessed from the
    # name the client chose (x.html would be served as a page).
    media_type = job.audio_type or "application/octet-stream"
    headers = {"Content-Length": str(size), "Content-Disposition": attachment(job.original_filename)}
    return StreamingResponse(_blocks(blobs, job.audio_key), media_type=media_type, headers=headers)


async def _blocks(blobs, key: str, block: int = 1 << 20):
    """A blob in blocks read in a thread, so a long recording is never held whole."""
    handle = await asyncio.to_thread(blobs.open_read, key)
    try:
        while data := await asyncio.to_thread(handle.read, block):
            yield data
    finally:
        await asyncio.to_thread(handle.close)


@router.get("/stats", tags=["service"], responses=_ERRORS)
async def stats(ctx: Context, caller: Caller, tenant: Tenant = None) -> dict:
    """The tenant's last 24 hours, queue and running jobs."""
    return await ctx.jobs.store.stats(caller.tenant_for(tenant))
