"""The REST API for transcriptions: /api/v1/transcriptions, sync and async jobs."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Form, Query, Request, Response, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse

from serve_app.api.dependencies import Context, ServiceContext, require_api_key
from serve_app.engine import DecodeOptions
from serve_app.errors import (
    InvalidAudio,
    InvalidParameter,
    JobNotFinished,
    JobNotFound,
    PayloadTooLarge,
)
from serve_app.formats import MEDIA_TYPES, RENDERERS
from serve_app.jobstore import STATUSES
from serve_app.preprocess import PrepareOptions
from serve_app.schemas import ErrorResponse, JobAccepted, JobPage, JobView, TranscriptionResult

router = APIRouter(prefix="/api/v1", tags=["transcriptions"], dependencies=[Depends(require_api_key)])

ResponseFormat = Literal["json", "text", "srt", "vtt", "tsv"]
DownloadFormat = Literal["json", "txt", "text", "srt", "vtt", "tsv"]
_ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 404, 409, 413, 415, 422, 503)}
READ_BLOCK = 1 << 20


async def read_upload(file: UploadFile, limit_mb: int) -> bytes:
    if file.size is not None and file.size > limit_mb * 2**20:
        raise PayloadTooLarge(f"The file is {file.size / 2**20:.1f} MiB; the limit is {limit_mb} MiB.")
    data = await file.read()
    if not data:
        raise InvalidAudio(f"The uploaded file '{file.filename or 'file'}' is empty.", code="empty_file")
    return data


async def upload_blocks(file: UploadFile) -> AsyncIterator[bytes]:
    while block := await file.read(READ_BLOCK):
        yield block


def render(result: TranscriptionResult, fmt: str) -> Response:
    fmt = "text" if fmt == "txt" else fmt
    if fmt == "json":
        return JSONResponse(result.model_dump(mode="json"))
    return PlainTextResponse(RENDERERS[fmt](result.segments), media_type=MEDIA_TYPES[fmt])


def _check_webhook(url: str | None) -> str | None:
    if url and not url.startswith(("http://", "https://")):
        raise InvalidParameter("webhook_url must be an http:// or https:// URL.", code="invalid_webhook_url")
    return url or None


@router.post(
    "/transcriptions",
    responses=_ERRORS,
    response_model=TranscriptionResult,
    status_code=200,
)
async def create_transcription(
    request: Request,
    ctx: Context,
    file: Annotated[UploadFile, File(description="Audio in any common container.")],
    model: Annotated[str | None, Form(description="Catalog model; default from settings.")] = None,
    language: Annotated[str | None, Form(description="ISO code; omit to detect.")] = None,
    task: Annotated[Literal["transcribe", "translate"], Form()] = "transcribe",
    response_format: Annotated[ResponseFormat, Form()] = "json",
    sync: Annotated[bool, Form(description="Wait for the result (true) or get a job id (false).")] = True,
    webhook_url: Annotated[str | None, Form(description="POSTed when an async job ends.")] = None,
    beam_size: Annotated[int | None, Form(ge=1, le=10)] = None,
    prompt: Annotated[
        str | None, Form(max_length=800, description="Text that came before, or spellings to prefer.")
    ] = None,
    temperature: Annotated[float, Form(ge=0, le=1, description="0: beam search; above 0: sampling.")] = 0.0,
    timestamps: Annotated[
        bool,
        Form(
            description="Sentence-sized segments (cut at word times; about 10% slower on CPU); "
            "false: one segment per <= 30 s chunk of speech."
        ),
    ] = False,
    word_timestamps: Annotated[bool, Form(description="Start and end of every word.")] = False,
    normalize: Annotated[bool, Form()] = True,
    vad: Annotated[bool, Form(description="Skip silence with voice activity detection.")] = True,
):
    spec = ctx.model_spec(model)
    request.state.model = spec.name
    options = ctx.decode_options(
        spec,
        language=language,
        task=task,
        beam_size=beam_size,
        prompt=prompt,
        temperature=temperature,
        timestamps=timestamps,
        word_timestamps=word_timestamps,
    )
    prepare = PrepareOptions(normalize=normalize, vad=vad)
    webhook_url = _check_webhook(webhook_url)
    user = ctx.settings.default_user
    filename = file.filename or "audio"

    if not sync:
        if ctx.jobs is None:
            raise InvalidParameter(
                "Asynchronous jobs need a job store; this instance has none.", code="jobs_unavailable"
            )
        if file.size is not None and file.size > ctx.settings.max_upload_mb * 2**20:
            raise PayloadTooLarge(f"The file is larger than {ctx.settings.max_upload_mb} MiB.")
        if file.size == 0:
            raise InvalidAudio(f"The uploaded file '{filename}' is empty.", code="empty_file")
        job = await ctx.jobs.submit(
            user_id=user,
            filename=filename,
            blocks=upload_blocks(file),
            model=spec.name,
            options=options,
            prepare=prepare,
            webhook_url=webhook_url,
        )
        body = JobAccepted(
            id=str(job.id),
            status=job.status,
            created_at=job.created_at,
            links={"self": f"/api/v1/transcriptions/{job.id}", "download": f"/api/v1/transcriptions/{job.id}/download"},
        )
        return JSONResponse(body.model_dump(mode="json"), 202, headers={"Location": body.links["self"]})

    data = await read_upload(file, ctx.settings.max_upload_mb)
    result = await transcribe_now(request, ctx, data, filename, spec.name, options, prepare)
    return render(result, response_format)


async def transcribe_now(
    request: Request,
    ctx: ServiceContext,
    data: bytes,
    filename: str,
    model: str,
    options: DecodeOptions,
    prepare: PrepareOptions,
) -> TranscriptionResult:
    """A synchronous transcription, recorded as a job when this instance keeps jobs."""
    started = time.perf_counter()
    if ctx.jobs is not None:
        result = await ctx.jobs.run_sync(
            user_id=ctx.settings.default_user,
            filename=filename,
            audio=data,
            model=model,
            options=options,
            prepare=prepare,
            request_id=request.state.request_id,
        )
    else:
        transcript = await ctx.backend.transcribe(data, model, options, prepare)
        result = TranscriptionResult.from_transcript(
            transcript, id=uuid.uuid4().hex, model=model, processing_time=time.perf_counter() - started
        )
    request.state.audio_seconds = round(result.duration, 2)
    return result


def _jobs(ctx: ServiceContext):
    if ctx.jobs is None:
        raise JobNotFound("This instance keeps no jobs.")
    return ctx.jobs


async def _find(ctx: ServiceContext, job_id: str):
    try:
        ident = uuid.UUID(job_id)
    except ValueError:
        raise JobNotFound(f"No transcription job '{job_id}'.") from None
    job = await _jobs(ctx).store.get(ident, ctx.settings.default_user)
    if job is None:
        raise JobNotFound(f"No transcription job '{job_id}'.")
    return job


@router.get("/transcriptions", responses=_ERRORS)
async def list_transcriptions(
    ctx: Context,
    status: Annotated[Literal[STATUSES] | None, Query()] = None,  # type: ignore[valid-type]
    q: Annotated[str | None, Query(max_length=200, description="Words in the file name.")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> JobPage:
    jobs, next_cursor = await _jobs(ctx).store.list(
        ctx.settings.default_user, status=status, search=q, cursor=cursor, limit=limit
    )
    return JobPage(items=[JobView.from_job(j) for j in jobs], next_cursor=next_cursor)


@router.get("/transcriptions/{job_id}", responses=_ERRORS)
async def get_transcription(ctx: Context, job_id: str) -> JobView:
    job = await _find(ctx, job_id)
    return JobView.from_job(job, await ctx.jobs.result(job))


@router.delete("/transcriptions/{job_id}", status_code=204, responses=_ERRORS)
async def delete_transcription(ctx: Context, job_id: str) -> Response:
    job = await _find(ctx, job_id)
    await ctx.jobs.delete(job.id, job.user_id)
    return Response(status_code=204)


@router.get("/transcriptions/{job_id}/download", responses=_ERRORS)
async def download_transcription(
    ctx: Context, job_id: str, format: Annotated[DownloadFormat, Query()] = "txt"
) -> Response:
    job = await _find(ctx, job_id)
    if job.status == "FAILED":
        raise JobNotFinished(f"Job {job_id} failed ({job.error}); there is nothing to download.")
    result = await ctx.jobs.result(job)
    if result is None:
        raise JobNotFinished(f"Job {job_id} is {job.status}; download it once it is COMPLETED.")
    response = render(result, format)
    ext = {"text": "txt"}.get(format, format)
    stem = job.original_filename.rsplit(".", 1)[0] or "transcript"
    response.headers["Content-Disposition"] = f'attachment; filename="{stem}.{ext}"'
    return response


@router.get("/stats", tags=["service"])
async def stats(ctx: Context) -> dict:
    return await _jobs(ctx).store.stats()
