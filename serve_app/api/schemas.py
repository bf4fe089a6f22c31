"""The shapes of the HTTP API that are not transcripts: models, errors, jobs and their pages."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from serve_app.core.results import TranscriptionResult


class ModelInfo(BaseModel):
    id: str
    description: str
    multilingual: bool
    languages: list[str]
    tasks: list[str]
    device: str
    compute_type: str
    default: bool = False
    diarization: bool = Field(False, description="Whether diarize=true (who spoke when) works with this model.")


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


class JobView(BaseModel):
    """A job as the API shows it."""

    id: str
    tenant: str
    request_id: str | None = Field(None, description="X-Request-ID of the request that made the job.")
    status: Literal["PENDING", "PROCESSING", "COMPLETED", "FAILED"]
    progress: float
    model: str
    language: str | None
    task: str
    filename: str
    attempts: int
    duration: float | None = None
    processing_time: float | None = None
    text_preview: str | None = None
    error: str | None = None
    webhook_url: str | None = None
    sync: bool = False
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    result: TranscriptionResult | None = None

    @classmethod
    def from_job(cls, job, result: TranscriptionResult | None = None) -> JobView:
        return cls(
            id=str(job.id),
            tenant=job.user_id,
            request_id=job.request_id,
            status=job.status,
            progress=job.progress,
            model=job.model,
            language=job.language,
            task=job.task,
            filename=job.original_filename,
            attempts=job.attempts,
            duration=job.duration_seconds,
            processing_time=job.processing_seconds,
            text_preview=job.text_preview,
            error=job.error,
            webhook_url=job.webhook_url,
            sync=job.is_sync,
            created_at=job.created_at,
            updated_at=job.updated_at,
            started_at=job.started_at,
            completed_at=job.completed_at,
            result=result,
        )


class JobAccepted(BaseModel):
    id: str
    status: str
    created_at: datetime
    links: dict[str, str]


class JobPage(BaseModel):
    items: list[JobView]
    next_cursor: str | None
