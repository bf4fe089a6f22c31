"""Typed shapes that cross module and process lines: requests, results, model descriptions."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from serve_app.transcript import Transcript


class WordOut(BaseModel):
    word: str
    start: float
    end: float
    probability: float | None = None
    speaker: str | None = None


class SegmentOut(BaseModel):
    id: int
    start: float
    end: float
    text: str
    avg_logprob: float | None = None
    no_speech_prob: float | None = None
    compression_ratio: float | None = None
    temperature: float = 0.0
    seek: int = 0
    tokens: list[int] = Field(default_factory=list)
    words: list[WordOut] | None = None
    speaker: str | None = Field(None, description="With diarize=true: who speaks (SPEAKER_00, ... or a known name).")


class SpeakerTime(BaseModel):
    speaker: str
    seconds: float = Field(description="Total speaking time.")


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
    processing_time: float = Field(
        description="Seconds the service worked on the audio: from the whole upload received (sync) or "
        "the job claimed by a worker (async) to the finished transcript; queue time not included."
    )
    word_timestamps: Literal["whisper", "whisperx"] | None = Field(
        None,
        description="How word times were found: 'whisperx' (a wav2vec2 alignment model) or "
        "'whisper' (Whisper's cross-attention); null when words were not asked for.",
    )
    alignment_note: str | None = Field(None, description="Why WhisperX alignment was not used, when it was not.")
    speakers: list[SpeakerTime] | None = Field(None, description="With diarize=true: each speaker found.")

    @property
    def words(self) -> list[WordOut]:
        return [w for s in self.segments for w in (s.words or [])]

    @classmethod
    def from_transcript(cls, transcript: Transcript, *, id: str, model: str, processing_time: float):
        return cls(
            id=id,
            text=transcript.text,
            segments=[SegmentOut.model_validate(s, from_attributes=True) for s in transcript.segments],
            language=transcript.language,
            language_probability=transcript.language_probability,
            duration=round(transcript.duration, 3),
            model=model,
            task=transcript.task,
            processing_time=round(processing_time, 3),
            word_timestamps=transcript.word_timestamps,
            alignment_note=transcript.alignment_note,
            speakers=transcript.speakers,
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
