"""What routes need, as FastAPI dependencies: the service context, the API key check."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from serve_app.errors import JobNotFound, Unauthorized
from serve_app.jobs import JobService
from serve_app.schemas import ModelInfo
from serve_app.service import TranscriptionService
from serve_app.settings import Settings


@dataclass
class ServiceContext:
    """Everything the HTTP layer knows about the running service."""

    service: TranscriptionService

    @property
    def settings(self) -> Settings:
        return self.service.settings

    @property
    def served(self) -> list[str]:
        return self.service.served

    @property
    def jobs(self) -> JobService:
        if self.service.jobs is None:
            raise JobNotFound("This instance keeps no jobs.")
        return self.service.jobs

    def model_info(self, name: str) -> ModelInfo:
        spec = self.service.catalog.get(name)
        return ModelInfo(
            id=name,
            description=spec.description,
            multilingual=spec.multilingual,
            languages=spec.languages,
            tasks=spec.tasks,
            device=self.settings.resolved_device,
            compute_type=self.settings.resolved_compute_type,
            default=name == self.settings.default_model,
        )


def get_context(request: Request) -> ServiceContext:
    return request.app.state.context


Context = Annotated[ServiceContext, Depends(get_context)]


def require_api_key(request: Request) -> None:
    """Check ``Authorization: Bearer <key>`` (what the openai SDK sends) or ``X-API-Key``.

    With no STT_API_KEY configured every caller is let in, whatever it sends.
    """
    expected = request.app.state.context.settings.api_key
    if not expected:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    given = token.strip() if scheme.lower() == "bearer" else request.headers.get("x-api-key", "")
    if not given:
        raise Unauthorized("Missing API key: send 'Authorization: Bearer <key>'.")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise Unauthorized("Incorrect API key provided.")
