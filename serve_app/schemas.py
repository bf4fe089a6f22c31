"""Typed shapes that cross module and process lines: requests, results, model descriptions."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from serve_app.engine import Transcript


class SegmentOut(BaseModel):
    id: int
    start: float
    end: float
    text: str
    avg_logprob: float | None = None


class TranscriptionResult(BaseModel):
    """What a finished transcription looks like, over HTTP and through a Ray handle."""

    id: str
    text: str
    segments: list[SegmentOut]
    language: str
    language_probability: float | None = None
    duration: float = Field(description="Seconds of audio in the upload.")
    model: str
    task: Literal["transcribe", "translate"] = "transcribe"
    processing_time: float = Field(description="Seconds from upload received to result.")

    @classmethod
    def from_transcript(cls, transcript: Transcript, *, id: str, model: str, processing_time: float):
        return cls(
            id=id,
            text=transcript.text,
            segments=[SegmentOut(**vars(s)) for s in transcript.segments],
            language=transcript.language,
            language_probability=transcript.language_probability,
            duration=round(transcript.duration, 3),
            model=model,
            task=transcript.task,
            processing_time=round(processing_time, 3),
        )


class ModelInfo(BaseModel):
    id: str
    description: str
    multilingual: bool
    languages: list[str]
    tasks: list[str]
    device: str
    compute_type: str
    default: bool = False


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody
