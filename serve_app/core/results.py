"""A finished transcription as every entry point returns it (HTTP, Python handle, stored job).

Domain types, not API types: jobs store them, batches zip them, the formats render them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from serve_app.core.transcript import Transcript


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
