"""Builds the FastAPI application: routers, one JSON error shape, one log line per request."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve_app.api.dependencies import ServiceContext, admit_upload
from serve_app.api.routers import (
    admin,
    batches,
    docs,
    events,
    openai_compat,
    system,
    transcriptions,
    web,
    webhooks,
)
from serve_app.api.routers.openai_compat import openai_error
from serve_app.core.errors import PayloadTooLarge, ServiceError, unwrap
from serve_app.core.metrics import METRICS
from serve_app.core.settings import Settings
from serve_app.transcription.service import TranscriptionService

log = logging.getLogger("speechtotext.access")
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
MAX_HEADER_BYTES = 32 * 1024


def error_response(
    status: int,
    code: str,
    message: str,
    headers: dict | None = None,
    request: Request | None = None,
    param: str | None = None,
) -> JSONResponse:
    """The one error shape: ours, or OpenAI's on the OpenAI-compatible routes (/v1/...)."""
    if request is not None and request.url.path.startswith("/v1/"):
        # OpenAI answers a bad parameter with 400, not 422
        return openai_error(400 if status == 422 else status, message, code, param, headers)
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers=headers)


def create_app(service: TranscriptionService) -> FastAPI:
    app = FastAPI(
        title="speechtotext",
        version="0.1.0",
        description="Speech to text on Ray Serve and WhisperX.",
        docs_url=None,  # served by routers/docs.py, with its files from the service, not a CDN
        redoc_url=None,
    )
    app.state.context = ServiceContext(service)
    app.include_router(system.router)
    app.include_router(transcriptions.router)
    app.include_router(events.router)
    app.include_router(batches.router)
    app.include_router(webhooks.router)
    app.include_router(openai_compat.router)
    app.include_router(admin.router)
    app.include_router(web.router)
    app.include_router(docs.router)
    _install_error_handlers(app)
    _install_request_middleware(app, service.settings)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError):
        headers = getattr(exc, "headers", None) or ({"Retry-After": "5"} if exc.status_code == 503 else None)
        return error_response(exc.status_code, exc.code, exc.message, headers, request, exc.param)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        problems, fields = [], []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
            problems.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
            fields.append(where)
        message = "; ".join(problems) or "Invalid request."
        return error_response(422, "invalid_request", message, request=request, param=next(iter(fields), None))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        # 400 here is Starlette refusing a body it cannot parse (broken multipart, a part header over its limit)
        codes = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
        return error_response(
            exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail), request=request
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        cause = unwrap(exc)
        if isinstance(cause, ServiceError):
            return await service_error(request, cause)
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        # Nothing about internals leaves the service; the log line carries them and this id.
        request_id = getattr(request.state, "request_id", None) or uuid.uuid4().hex
        message = f"Internal error; it is logged under request id {request_id}."
        return error_response(500, "internal_error", message, {"x-request-id": request_id}, request=request)


def _route(request: Request) -> str:
    """The route as declared (``/api/v1/transcriptions/{job_id}``): a label with bounded values."""
    route = request.scope.get("route")
    return getattr(route, "path", None) or "unmatched"


def _request_id(given: str | None) -> str:
    """The client's X-Request-ID when it is a sane token (it is echoed and logged), else a new one."""
    if given and REQUEST_ID.fullmatch(given):
        return given
    return uuid.uuid4().hex


class BodyLimit:
    """Counts a request body as it arrives and stops it at ``limit`` bytes: an upload without a
    Content-Length (chunked) is cut off there instead of being read whole first.

    FastAPI's own ``max_body_size`` answers in Starlette's plain text; the HTTPException raised
    here reaches this app's handlers and gets the one error shape.
    """

    def __init__(self, app, limit_for):
        self.app = app
        self.limit_for = limit_for  # path -> the most bytes a request body there may hold

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        seen, limit = 0, self.limit_for(scope["path"])

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise StarletteHTTPException(413, f"The upload is larger than the limit of {limit / 2**20:g} MiB.")
            return message

        await self.app(scope, counted, send)


def _install_request_middleware(app: FastAPI, settings: Settings) -> None:
    def limit_for(path: str) -> int:
        batch = path.rstrip("/") == "/api/v1/batches"  # many files in one body
        return (settings.max_batch_mb if batch else settings.max_upload_mb) * 2**20

    app.add_middleware(BodyLimit, limit_for=limit_for)

    @app.middleware("http")
    async def per_request(request: Request, call_next):
        request.state.request_id = _request_id(request.headers.get("x-request-id"))
        started = time.perf_counter()
        length = request.headers.get("content-length")
        header_bytes = sum(len(k) + len(v) + 4 for k, v in request.scope["headers"])
        if header_bytes > MAX_HEADER_BYTES:
            response = error_response(
                431,
                "headers_too_large",
                f"The request's headers are {header_bytes / 1024:.0f} KiB; at most {MAX_HEADER_BYTES // 1024} KiB.",
                request=request,
            )
        elif length and length.isdigit() and int(length) > (limit := limit_for(request.url.path)):
            # Refuse before reading the body: a huge upload should cost us nothing.
            err = PayloadTooLarge(f"The upload is {int(length) / 2**20:.1f} MiB; the limit is {limit / 2**20:g} MiB.")
            response = error_response(err.status_code, err.code, err.message, request=request)
        elif refused := await _refused_upload(request):
            response = refused
        else:
            response = await call_next(request)
        # No answer of this service is ever sniffed into another type (stored audio as a page).
        response.headers["X-Content-Type-Options"] = "nosniff"
        if not getattr(request.app.state, "server_echoes_request_id", False):
            response.headers["x-request-id"] = request.state.request_id
        if replica := getattr(request.app.state, "replica", None):
            response.headers["x-stt-replica"] = replica
        window = getattr(request.state, "rate_window", None)
        if window is not None:  # every answer of a limited route says where the tenant stands
            for name, value in window.headers(request.url.path.startswith("/v1/")).items():
                response.headers.setdefault(name, value)
        # Logged once the body is sent: a streamed answer's audio length and latency are only
        # known at its end (a /v1 stream sets audio_seconds from its last message).
        body = getattr(response, "body_iterator", None)
        if body is None:  # answered here, whole (431, 413)
            _log(request, response.status_code, started)
            return response

        async def sent():
            try:
                async for chunk in body:
                    yield chunk
            finally:
                _log(request, response.status_code, started)

        response.body_iterator = sent()
        return response


async def _refused_upload(request: Request) -> JSONResponse | None:
    """An upload its sender may not make now (key, rate limit, quota, queue), answered before
    its body is read; None to go on."""
    try:
        await admit_upload(request)
    except ServiceError as exc:
        headers = getattr(exc, "headers", None) or ({"Retry-After": "5"} if exc.status_code == 503 else None)
        return error_response(exc.status_code, exc.code, exc.message, headers, request, exc.param)
    return None


def _log(request: Request, status: int, started: float) -> None:
    """The request's one log line and its count in the metrics."""
    route = _route(request)
    METRICS.request(route, getattr(request.state, "model", None), status)
    log.info(
        json.dumps(
            {
                "request_id": request.state.request_id,
                "method": request.method,
                "route": route,
                "path": request.url.path,
                "status": status,
                "tenant": getattr(getattr(request.state, "principal", None), "tenant", None),
                "model": getattr(request.state, "model", None),
                "audio_seconds": getattr(request.state, "audio_seconds", None),
                "latency_ms": round((time.perf_counter() - started) * 1000, 1),
            }
        )
    )
