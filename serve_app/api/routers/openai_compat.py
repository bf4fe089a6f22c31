"""OpenAI's audio API: /v1/audio/transcriptions and /v1/audio/translations, as the SDK calls them.

Shapes follow the ``openai`` SDK's types (``Transcription``, ``TranscriptionVerbose``,
``TranscriptionTextDeltaEvent``...). Errors on these routes use OpenAI's error shape; the app's
error handlers switch on the ``/v1/`` prefix.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Annotated

from fastapi import APIRouter, File, Form, Request, Response, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from serve_app.api.dependencies import Caller, Context, ServiceContext, TranscribingCaller
from serve_app.core.errors import InvalidParameter, ServiceError
from serve_app.core.formats import MEDIA_TYPES, RENDERERS
from serve_app.core.results import TranscriptionResult
from serve_app.core.transcript import Transcript
from serve_app.tenancy.keys import Principal
from serve_app.transcription.request import TranscriptionRequest

router = APIRouter(prefix="/v1", tags=["openai"])

RESPONSE_FORMATS = ("json", "text", "srt", "verbose_json", "vtt", "diarized_json")
MAX_KNOWN_SPEAKERS = 4  # as OpenAI's API
MAX_REFERENCE_BYTES = 2 * 2**20
REFERENCE_SECONDS = (2.0, 10.0)
DATA_URL = re.compile(r"^data:(audio|video)/[A-Za-z0-9.+-]+(;[A-Za-z0-9=._+-]+)*;base64,", re.ASCII)
GRANULARITIES = ("segment", "word")
ALIAS = "whisper-1"


def openai_error_body(status: int, message: str, code: str | None, param: str | None = None) -> dict:
    """OpenAI's error shape; its ``type`` from the status, as OpenAI's API sets it."""
    kind = {401: "authentication_error", 403: "permission_error", 429: "requests"}.get(status)
    kind = kind or ("server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def openai_error(
    status: int, message: str, code: str | None, param: str | None = None, headers: dict | None = None
) -> JSONResponse:
    return JSONResponse(openai_error_body(status, message, code, param), status, headers=headers)


def language_name(code: str) -> str:
    """OpenAI reports languages by name ("english"), as Whisper's table spells them."""
    from whisperx.utils import LANGUAGES  # a plain dict; importing it loads no model code

    return LANGUAGES.get(code, code)


def _model(name: str) -> str | None:
    """``whisper-1`` (what clients send by default) is the default model."""
    return None if name.strip() == ALIAS else name


async def _granularities(request: Request, response_format: str) -> set[str]:
    # The SDK sends the list as repeated ``timestamp_granularities[]`` fields; FastAPI cannot
    # declare a field name with brackets, so read the parsed form (cached by Starlette).
    form = await request.form()
    given = form.getlist("timestamp_granularities[]") + form.getlist("timestamp_granularities")
    wanted = {str(g).strip() for g in given}
    unknown = wanted - set(GRANULARITIES)
    if unknown:
        raise InvalidParameter(
            f"timestamp_granularities must be 'segment' and/or 'word', not {sorted(unknown)}.",
            param="timestamp_granularities",
        )
    if wanted and response_format != "verbose_json":
        raise InvalidParameter(
            "timestamp_granularities needs response_format 'verbose_json'.",
            param="timestamp_granularities",
        )
    return wanted or {"segment"}


def _check_format(response_format: str) -> None:
    if response_format not in RESPONSE_FORMATS:
        raise InvalidParameter(
            f"response_format must be one of {', '.join(RESPONSE_FORMATS)}, not '{response_format}'.",
            param="response_format",
        )


async def _known_speakers(request: Request) -> tuple[tuple[str, bytes], ...]:
    """``known_speaker_names[]`` with their ``known_speaker_references[]`` (audio data URLs of
    2-10 s each), checked here so that a bad one is a 400 before any work is done."""
    form = await request.form()
    names = [str(n) for n in form.getlist("known_speaker_names[]") + form.getlist("known_speaker_names")]
    refs = [str(r) for r in form.getlist("known_speaker_references[]") + form.getlist("known_speaker_references")]
    if not names and not refs:
        return ()
    if len(names) != len(refs):
        raise InvalidParameter(
            f"known_speaker_names has {len(names)} entries and known_speaker_references {len(refs)}; "
            "give one reference per name.",
            param="known_speaker_references",
        )
    if len(names) > MAX_KNOWN_SPEAKERS:
        raise InvalidParameter(f"At most {MAX_KNOWN_SPEAKERS} known speakers.", param="known_speaker_names")
    known = []
    for name, ref in zip(names, refs, strict=True):
        name = name.strip()
        if not name or len(name) > 64 or any(unicodedata.category(c)[0] == "C" for c in name):
            raise InvalidParameter(
                "Each known speaker name must be 1-64 printable characters.", param="known_speaker_names"
            )
        if name in {n for n, _ in known}:
            raise InvalidParameter(f"Known speaker name '{name}' is given twice.", param="known_speaker_names")
        match = DATA_URL.match(ref[:200])
        if match is None:
            raise InvalidParameter(
                "Each known speaker reference must be an audio data URL (data:audio/wav;base64,...).",
                param="known_speaker_references",
            )
        if len(ref) > MAX_REFERENCE_BYTES * 4 // 3 + 200:
            raise InvalidParameter(
                f"Known speaker reference for '{name}' is over {MAX_REFERENCE_BYTES // 2**20} MB.",
                param="known_speaker_references",
            )
        try:
            data = base64.b64decode(ref[match.end() :], validate=True)
        except (binascii.Error, ValueError):
            raise InvalidParameter(
                f"Known speaker reference for '{name}' is not valid base64.", param="known_speaker_references"
            ) from None
        seconds = await asyncio.to_thread(_reference_seconds, data, name)
        low, high = REFERENCE_SECONDS
        if not low <= seconds <= high:
            raise InvalidParameter(
                f"Known speaker reference for '{name}' is {seconds:.1f} s of audio; it must be {low:g}-{high:g} s.",
                param="known_speaker_references",
            )
        known.append((name, data))
    return tuple(known)


def _reference_seconds(data: bytes, name: str) -> float:
    from serve_app.audio.decode import decode
    from serve_app.audio.pieces import SAMPLE_RATE

    try:
        return len(decode(data, max_seconds=REFERENCE_SECONDS[1] + 5)) / SAMPLE_RATE
    except ServiceError as exc:
        raise InvalidParameter(
            f"Known speaker reference for '{name}': {exc.message}", param="known_speaker_references"
        ) from None


def _diarized(result: TranscriptionResult, known: set[str]) -> dict:
    """OpenAI's ``diarized_json``: unnamed speakers are A, B, ... in order of first words."""
    letters: dict[str, str] = {}
    for segment in result.segments:
        speaker = segment.speaker or "SPEAKER_00"
        if speaker not in known and speaker not in letters:
            letters[speaker] = _letter(len(letters))
    return {
        "task": "transcribe",
        "duration": result.duration,
        "text": result.text,
        "segments": [
            {
                "type": "transcript.text.segment",
                "id": f"seg_{s.id:03d}",
                "start": s.start,
                "end": s.end,
                "text": s.text.strip(),
                "speaker": letters.get(s.speaker or "SPEAKER_00", s.speaker),
            }
            for s in result.segments
        ],
        "usage": {"type": "duration", "seconds": round(result.duration, 3)},
    }


def _letter(n: int) -> str:
    return chr(ord("A") + n) if n < 26 else f"S{n}"


def _respond(
    result: TranscriptionResult, response_format: str, granularities: set[str], known: set[str] = frozenset()
) -> Response:
    usage = {"type": "duration", "seconds": round(result.duration, 3)}
    if response_format == "diarized_json":
        return JSONResponse(_diarized(result, known))
    if response_format == "json":
        return JSONResponse({"text": result.text, "usage": usage})
    if response_format == "verbose_json":
        body: dict = {
            "task": result.task,
            "language": language_name(result.language),
            "duration": result.duration,
            "text": result.text,
        }
        if "segment" in granularities:
            body["segments"] = [
                {
                    "id": s.id,
                    "seek": s.seek,
                    "start": s.start,
                    "end": s.end,
                    "text": s.text,
                    "tokens": s.tokens,
                    "temperature": s.temperature,
                    "avg_logprob": s.avg_logprob or 0.0,
                    "compression_ratio": s.compression_ratio or 0.0,
                    "no_speech_prob": s.no_speech_prob or 0.0,
                }
                for s in result.segments
            ]
        if "word" in granularities:
            body["words"] = [{"word": w.word, "start": w.start, "end": w.end} for w in result.words]
            # Not in OpenAI's shape (clients ignore extra keys): how the word times were found.
            body["word_timestamps"] = result.word_timestamps
            body["alignment_note"] = result.alignment_note
        body["language_probability"] = result.language_probability
        body["usage"] = usage
        return JSONResponse(body)
    if response_format == "text":
        return PlainTextResponse(result.text + "\n")
    return PlainTextResponse(RENDERERS[response_format](result.segments), media_type=MEDIA_TYPES[response_format])


def _sse(event: dict) -> bytes:
    return f"data: {json.dumps(event, ensure_ascii=False)}\n\n".encode()


async def _stream(
    request: Request, first: Transcript, rest: AsyncIterator[Transcript | TranscriptionResult]
) -> AsyncIterator[bytes]:
    """``transcript.text.delta`` per decoded segment, then ``transcript.text.done``."""
    deltas: list[str] = []
    try:
        item: Transcript | TranscriptionResult | None = first
        while item is not None:
            if isinstance(item, TranscriptionResult):  # the end: the whole recording is known
                request.state.audio_seconds = round(item.duration, 2)
            else:
                for segment in item.segments:
                    deltas.append((" " if deltas else "") + segment.text)
                    yield _sse({"type": "transcript.text.delta", "delta": deltas[-1]})
            item = await anext(rest, None)
        yield _sse({"type": "transcript.text.done", "text": "".join(deltas)})
    except ServiceError as exc:  # the status line is sent: report it as the SDK reads errors
        yield _sse(openai_error_body(exc.status_code, exc.message, exc.code, exc.param))
    finally:
        await rest.aclose()


async def _audio(
    request: Request,
    ctx: ServiceContext,
    caller: Principal,
    file: UploadFile,
    response_format: str,
    stream: bool = False,
    **fields,
) -> Response:
    """Transcribe or translate; ``fields`` are TranscriptionRequest options."""
    _check_format(response_format)
    granularities = await _granularities(request, response_format)
    diarize = response_format == "diarized_json"
    timestamps = (
        response_format in ("srt", "vtt")
        or (response_format == "verbose_json" and "segment" in granularities)
        or diarize
    )
    if diarize and stream:
        raise InvalidParameter("diarized_json cannot be streamed; send stream=false.", param="stream")
    asked = TranscriptionRequest.parse(
        timestamps=timestamps,
        word_timestamps=response_format == "verbose_json" and "word" in granularities,
        diarize=diarize,
        **fields,
    )
    service = ctx.service
    resolved = service.resolve(asked)
    known = await _known_speakers(request)
    if known and not diarize:
        raise InvalidParameter(
            "known_speaker_names needs response_format 'diarized_json'.", param="known_speaker_names"
        )
    if known:
        resolved = replace(resolved, diarize=replace(resolved.diarize, known=known))
    request.state.model = resolved.model
    upload = service.upload(file)
    request_id = request.state.request_id
    if not stream:
        result = await service.transcribe(resolved, upload, caller=caller, request_id=request_id)
        request.state.audio_seconds = round(result.duration, 2)
        return _respond(result, response_format, granularities, {name for name, _ in known})

    parts = service.stream(resolved, upload, caller=caller, request_id=request_id)
    # Wait for the first part before answering, so bad audio still gets a 4xx status.
    first = await anext(parts)
    return StreamingResponse(_stream(request, first, parts), media_type="text/event-stream")


@router.post("/audio/transcriptions")
async def create_transcription(
    request: Request,
    ctx: Context,
    caller: TranscribingCaller,
    file: Annotated[UploadFile, File()],
    model: Annotated[str, Form(description=f"A served model, or '{ALIAS}' for the default one.")],
    language: Annotated[str | None, Form()] = None,
    prompt: Annotated[str | None, Form()] = None,
    response_format: Annotated[str, Form()] = "json",
    temperature: Annotated[float, Form()] = 0.0,
    stream: Annotated[bool, Form()] = False,
):
    return await _audio(
        request,
        ctx,
        caller,
        file,
        response_format,
        stream,
        model=_model(model),
        language=language,
        prompt=prompt,
        temperature=temperature,
    )


@router.post("/audio/translations")
async def create_translation(
    request: Request,
    ctx: Context,
    caller: TranscribingCaller,
    file: Annotated[UploadFile, File()],
    model: Annotated[str, Form()],
    prompt: Annotated[str | None, Form()] = None,
    response_format: Annotated[str, Form()] = "json",
    temperature: Annotated[float, Form()] = 0.0,
):
    return await _audio(
        request,
        ctx,
        caller,
        file,
        response_format,
        task="translate",
        model=_model(model),
        prompt=prompt,
        temperature=temperature,
    )


@router.get("/models")
async def list_models(ctx: Context, caller: Caller) -> dict:
    """OpenAI's model list, for clients that pick a model from it (Open WebUI and others)."""
    names = [*ctx.served, ALIAS]
    return {
        "object": "list",
        "data": [{"id": n, "object": "model", "created": 0, "owned_by": "speechtotext"} for n in names],
    }
