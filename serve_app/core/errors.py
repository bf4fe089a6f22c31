"""Errors a client can act on. Each carries its HTTP status and a stable machine code."""

from __future__ import annotations

import asyncio
import math


class ServiceError(Exception):
    """Base of every error the API turns into ``{"error": {"code", "message"}}``."""

    status_code = 400
    code = "bad_request"

    param: str | None = None  # the request field at fault, when there is one

    def __init__(
        self, message: str, *, code: str | None = None, status_code: int | None = None, param: str | None = None
    ):
        super().__init__(message)
        self.message = message
        if param is not None:
            self.param = param
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code

    def __reduce__(self):  # survive pickling through Ray with code and status intact
        return (_rebuild, (type(self), self.message, self.code, self.status_code, self.param))


def _rebuild(cls, message, code, status_code, param=None):
    return cls(message, code=code, status_code=status_code, param=param)


class InvalidAudio(ServiceError):
    """The upload is empty, not audio, truncated, or otherwise undecodable."""

    status_code = 400
    code = "invalid_audio"


class UnsupportedMediaType(ServiceError):
    status_code = 415
    code = "unsupported_media_type"


class PayloadTooLarge(ServiceError):
    status_code = 413
    code = "payload_too_large"


class UnknownModel(ServiceError):
    status_code = 404
    code = "model_not_found"


class UnsupportedLanguage(ServiceError):
    status_code = 400
    code = "unsupported_language"


class InvalidParameter(ServiceError):
    status_code = 422
    code = "invalid_parameter"


class ModelUnavailable(ServiceError):
    """A model that cannot transcribe now: its weights are missing on this machine, or no
    replica of it runs (its node is gone); the latter passes."""

    status_code = 503
    code = "model_unavailable"


class JobNotFound(ServiceError):
    status_code = 404
    code = "job_not_found"


class JobNotFinished(ServiceError):
    status_code = 409
    code = "job_not_finished"


class Unauthorized(ServiceError):
    status_code = 401
    code = "invalid_api_key"


class Forbidden(ServiceError):
    """A key that may not do this (a user key on an admin route or another tenant's list)."""

    status_code = 403
    code = "forbidden"


class Overloaded(ServiceError):
    status_code = 503
    code = "overloaded"


class NotReady(ServiceError):
    """/api/v1/ready while a part of the service has not started (and warmed) yet."""

    status_code = 503
    code = "not_ready"


def unwrap(exc: BaseException) -> BaseException:
    """The original exception behind a Ray task error (Ray wraps remote exceptions)."""
    # Ray's wrapper subclasses the original's class, so isinstance() already matches it, but
    # class attributes such as ``code`` would come from the class, not the instance: always
    # follow ``cause`` to the original.
    for _ in range(5):
        cause = getattr(exc, "cause", None)
        if not isinstance(cause, BaseException) or cause is exc:
            break
        exc = cause
    return exc


class DatabaseUnavailable(ServiceError):
    """PostgreSQL cannot be reached now (503): the client retries; nothing was half-written."""

    status_code = 503
    code = "database_unavailable"


class RateLimited(ServiceError):
    status_code = 429
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float = 1.0, code: str | None = None, headers: dict | None = None):
        super().__init__(message, code=code)
        self.retry_after = max(retry_after, 0.001)
        self.headers = {
            **(headers or {}),
            "Retry-After": str(math.ceil(self.retry_after)),
            "retry-after-ms": str(math.ceil(self.retry_after * 1000)),
        }

    def __reduce__(self):
        return (RateLimited, (self.message,), dict(self.__dict__))


def failure_reason(exc: BaseException) -> str:
    """What a failed job's ``error`` says."""
    if isinstance(exc, ServiceError):
        return exc.message
    if isinstance(exc, (GeneratorExit, asyncio.CancelledError)):
        return "The client went away before the transcription was finished."
    return f"{type(exc).__name__}: {exc}"
