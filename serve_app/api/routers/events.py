"""A job's events as they happen (server-sent events): progress, each finished piece's text,
then completed or failed. For async and sync jobs alike; a client that connects late gets the
current state first (every piece so far, the progress), then what follows. All streams of a job
on a replica share one watcher (serve_app/transcription/watch.py); open streams are bounded per
tenant and per replica (serve_app/api/streams.py)."""

from __future__ import annotations

import json
import time

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from serve_app.api.dependencies import Caller, Context, ServiceContext, _given_key
from serve_app.api.routers.transcriptions import _ERRORS, _find
from serve_app.api.streams import Ticket
from serve_app.core.errors import ServiceError
from serve_app.jobs.store import Job

router = APIRouter(prefix="/api/v1", tags=["transcriptions"])

HEARTBEAT_SECONDS = 15.0  # a comment line, so that proxies keep an idle stream open
RECHECK_KEY_SECONDS = 2.0  # how often an open stream checks that its key still holds
MAX_STREAM_SECONDS = 3600.0  # then the stream ends; the client reconnects and resumes


def sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


@router.get(
    "/transcriptions/{job_id}/events",
    responses=_ERRORS | {200: {"content": {"text/event-stream": {}}, "description": "The job's events."}},
)
async def job_events(request: Request, ctx: Context, caller: Caller, job_id: str) -> StreamingResponse:
    """Server-sent events: ``progress`` (status, fraction of the audio transcribed),
    ``partial`` (a finished piece: seq, start, end, text), then ``completed`` (the text, the
    model, the duration) or ``failed`` (the error); ``error`` when the stream ends early (its
    key revoked, the database down). At most ``STT_LIMIT_EVENT_STREAMS`` open per tenant and
    ``STT_MAX_EVENT_STREAMS`` per replica (then 429 ``too_many_streams``)."""
    job = await _find(ctx, caller, job_id)  # another tenant's job is a 404 here, not an empty stream
    ticket = ctx.streams.admit(caller.tenant)
    key, host = _given_key(request), request.headers.get("host", "")
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(_events(ctx, job, ticket, key, host), media_type="text/event-stream", headers=headers)


async def _events(ctx: ServiceContext, job: Job, ticket: Ticket, key: str | None, host: str):
    started = checked = beat = time.monotonic()
    seq, shown = 0, None
    try:
        async with ctx.watch.follow(job.id) as follower:
            while time.monotonic() - started < MAX_STREAM_SECONDS:
                state = await follower.next(timeout=RECHECK_KEY_SECONDS)
                if time.monotonic() - checked >= RECHECK_KEY_SECONDS:
                    checked = time.monotonic()
                    try:  # a key revoked while its stream is open stops receiving text
                        await ctx.auth.authenticate(key, host)
                    except ServiceError as exc:
                        yield sse("error", {"id": str(job.id), "code": exc.code, "error": exc.message})
                        return
                if state is None:
                    if time.monotonic() - beat >= HEARTBEAT_SECONDS:
                        beat = time.monotonic()
                        yield ": still working\n\n"  # so that proxies keep an idle stream open
                    continue
                if state.error is not None:
                    yield sse("error", {"id": str(job.id), "error": state.error})
                    return
                current = state.job
                if current is None:
                    yield sse("failed", {"id": str(job.id), "status": "DELETED", "error": "The job was deleted."})
                    return
                for part in state.parts[seq:]:
                    yield sse(
                        "partial",
                        {
                            "seq": part["seq"],
                            "start": part["start_seconds"],
                            "end": part["end_seconds"],
                            "text": part["text"],
                        },
                    )
                seq = len(state.parts)
                if (current.status, current.progress) != shown:
                    shown = (current.status, current.progress)
                    yield sse("progress", {"id": str(job.id), "status": current.status, "progress": current.progress})
                if current.status == "COMPLETED":
                    result = await ctx.jobs.result(current)
                    body = {"id": str(job.id), "status": "COMPLETED", "progress": 1.0, "model": current.model}
                    if result is not None:
                        body |= {"text": result.text, "language": result.language, "duration": result.duration}
                    yield sse("completed", body)
                    return
                if current.status == "FAILED":
                    yield sse("failed", {"id": str(job.id), "status": "FAILED", "error": current.error})
                    return
    finally:
        ticket.release()
