"""The REST API for transcriptions: /api/v1/transcriptions."""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import PlainTextResponse

from serve_app.api.dependencies import Context
from serve_app.errors import InvalidAudio, InvalidParameter, PayloadTooLarge
from serve_app.formats import MEDIA_TYPES, RENDERERS
from serve_app.preprocess import PrepareOptions
from serve_app.schemas import ErrorResponse, TranscriptionResult

router = APIRouter(prefix="/api/v1", tags=["transcriptions"])

ResponseFormat = Literal["json", "text", "srt", "vtt", "tsv"]
_ERRORS = {code: {"model": ErrorResponse} for code in (400, 404, 413, 415, 422, 503)}


async def read_upload(file: UploadFile, limit_mb: int) -> bytes:
    if file.size is not None and file.size > limit_mb * 2**20:
        raise PayloadTooLarge(f"The file is {file.size / 2**20:.1f} MiB; the limit is {limit_mb} MiB.")
    data = await file.read()
    if not data:
        raise InvalidAudio(f"The uploaded file '{file.filename or 'file'}' is empty.", code="empty_file")
    return data


@router.post("/transcriptions", responses=_ERRORS, response_model=TranscriptionResult)
async def create_transcription(
    request: Request,
    ctx: Context,
    file: Annotated[UploadFile, File(description="Audio in any common container.")],
    model: Annotated[str | None, Form(description="Catalog model; default from settings.")] = None,
    language: Annotated[str | None, Form(description="ISO code; omit to detect.")] = None,
    task: Annotated[Literal["transcribe", "translate"], Form()] = "transcribe",
    response_format: Annotated[ResponseFormat, Form()] = "json",
    sync: Annotated[bool, Form(description="Wait for the result.")] = True,
    beam_size: Annotated[int | None, Form(ge=1, le=10)] = None,
    prompt: Annotated[str | None, Form(max_length=800)] = None,
    normalize: Annotated[bool, Form()] = True,
    vad: Annotated[bool, Form(description="Skip silence with voice activity detection.")] = True,
):
    started = time.perf_counter()
    spec = ctx.model_spec(model)
    request.state.model = spec.name
    options = ctx.decode_options(spec, language=language, task=task, beam_size=beam_size, prompt=prompt)
    if not sync:
        raise InvalidParameter(
            "Asynchronous jobs (sync=false) are not available in this version; send sync=true.",
            code="async_unavailable",
        )
    data = await read_upload(file, ctx.settings.max_upload_mb)
    transcript = await ctx.backend.transcribe(
        data, spec.name, options, PrepareOptions(normalize=normalize, vad=vad)
    )
    request.state.audio_seconds = round(transcript.duration, 2)
    result = TranscriptionResult.from_transcript(
        transcript,
        id=uuid.uuid4().hex,
        model=spec.name,
        processing_time=time.perf_counter() - started,
    )
    if response_format == "json":
        return result
    return PlainTextResponse(
        RENDERERS[response_format](result.segments), media_type=MEDIA_TYPES[response_format]
    )
