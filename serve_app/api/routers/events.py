"""A job's events as they happen (server-sent events): progress, each finished piece's text,
then completed or failed. For async and sync jobs alike; a client that connects late gets the
current state first (every piece so far, the progress), then what follows."""

from __future__ import annotations

import asyncio
import json
import time

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from serve_app.api.dependencies import Caller, Context, ServiceContext
from serve_app.api.routers.transcriptions import _ERRORS, _find
from serve_app.core.errors import DatabaseUnavailable
from serve_app.jobs.store import Job
from serve_app.transcription.progress import read_parts

router = APIRouter(prefix="/api/v1", tags=["transcriptions"])

POLL_SECONDS = 0.5  # how often a stream looks at its job (one indexed read)
HEARTBEAT_SECONDS = 15.0  # a comment line, so that proxies keep an idle stream open
MAX_STREAM_SECONDS = 3600.0  # then the stream ends; the client reconnects and resumes


def sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


@router.get(
    "/transcriptions/{job_id}/events",
    responses=_ERRORS | {200: {"content": {"text/event-stream": {}}, "description": "The job's events."}},
)
async def job_events(ctx: Context, caller: Caller, job_id: str) -> StreamingResponse:
    """Server-sent events: ``progress`` (status, fraction of the audio transcribed),
    ``partial`` (a finished piece: seq, start, end, text), then ``completed`` (the text, the
    model, the duration) or ``failed`` (the error)."""
    job = await _find(ctx, caller, job_id)  # another tenant's job is a 404 here, not an empty stream
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(_events(ctx, job), media_type="text/event-stream", headers=headers)


async def _events(ctx: ServiceContext, job: Job):
    store, seq, shown = ctx.jobs.store, 0, None
    started = beat = time.monotonic()
    try:
        while time.monotonic() - started < MAX_STREAM_SECONDS:
            current = await store.get(job.id)
            if current is None:
                yield sse("failed", {"id": str(job.id), "status": "DELETED", "error": "The job was deleted."})
                return
            for part in await read_parts(store, job.id, seq):
                seq = part["seq"]
                yield sse(
                    "partial",
                    {"seq": seq, "start": part["start_seconds"], "end": part["end_seconds"], "text": part["text"]},
                )
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
            if time.monotonic() - beat >= HEARTBEAT_SECONDS:
                beat = time.monotonic()
                yield ": still working\n\n"
            await asyncio.sleep(POLL_SECONDS)
    except DatabaseUnavailable as exc:
        yield sse("error", {"id": str(job.id), "error": exc.message})
