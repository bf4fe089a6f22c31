"""What routes need, as FastAPI dependencies: the service context and request validation."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from serve_app.backend import TranscriptionBackend
from serve_app.catalog import ModelCatalog, ModelSpec
from serve_app.engine import DecodeOptions
from serve_app.errors import InvalidParameter, Unauthorized, UnknownModel, UnsupportedLanguage
from serve_app.jobs import JobService
from serve_app.schemas import ModelInfo
from serve_app.settings import Settings


@dataclass
class ServiceContext:
    """Everything the HTTP layer knows about the running service."""

    settings: Settings
    catalog: ModelCatalog
    backend: TranscriptionBackend
    jobs: JobService | None = None

    @property
    def served(self) -> list[str]:
        return list(self.settings.models)

    def model_spec(self, name: str | None) -> ModelSpec:
        name = name or self.settings.default_model
        if name not in self.served:
            known = ", ".join(self.served)
            raise UnknownModel(f"Model '{name}' is not served here; available models: {known}.", param="model")
        return self.catalog.get(name)

    def model_info(self, name: str) -> ModelInfo:
        spec = self.catalog.get(name)
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

    def decode_options(
        self,
        spec: ModelSpec,
        *,
        language: str | None,
        task: str,
        beam_size: int | None,
        prompt: str | None,
        temperature: float = 0.0,
        timestamps: bool = False,
        word_timestamps: bool = False,
    ) -> DecodeOptions:
        """Check a request's decode options against what the model can do."""
        if language is not None:
            language = language.strip().lower() or None
        if language is not None and language not in spec.languages:
            if spec.multilingual:
                raise UnsupportedLanguage(
                    f"Language '{language}' is not a Whisper language code (see /api/v1/languages).",
                    param="language",
                )
            raise UnsupportedLanguage(
                f"Model '{spec.name}' only transcribes English ('en'); "
                f"use a multilingual model such as 'base' for '{language}'.",
                param="language",
            )
        if task not in spec.tasks:
            raise InvalidParameter(
                f"Model '{spec.name}' cannot {task}; use a multilingual model such as 'base'.",
                code="unsupported_task",
                status_code=400,
                param="model",
            )
        if not 0.0 <= temperature <= 1.0:
            raise InvalidParameter(f"temperature must be between 0 and 1, not {temperature}.", param="temperature")
        if not spec.multilingual:
            language = "en"
        return DecodeOptions(
            task=task,  # type: ignore[arg-type]
            language=language,
            beam_size=beam_size or self.settings.beam_size,
            initial_prompt=prompt or None,
            temperature=float(temperature),
            timestamps=timestamps,
            word_timestamps=word_timestamps,
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
