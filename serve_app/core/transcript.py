"""The data a transcription is made of: decode options in, words, segments and transcripts out.

A leaf module (dataclasses only, no model code): the HTTP layer, jobs, the engine and the
Ray wiring all speak these types without importing one another.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

Task = Literal["transcribe", "translate"]
# Whisper's mel frames per second of audio: what a segment's ``seek`` counts.
FRAMES_PER_SECOND = 100


@dataclass(frozen=True)
class DecodeOptions:
    """How to decode one request. Requests share a decode call only when these are equal."""

    task: Task = "transcribe"
    language: str | None = None  # None: detect (multilingual models only)
    beam_size: int = 5
    initial_prompt: str | None = None
    temperature: float = 0.0  # 0: beam search; above 0: sampling at that temperature
    # Sentence-sized segments, cut at word times. Off, each segment is one VAD chunk of up to
    # 30 s (no alignment pass: about 10% faster on CPU).
    timestamps: bool = False
    word_timestamps: bool = False


@dataclass(frozen=True)
class DiarizeOptions:
    """Who spoke when: asked for with ``diarize=true``; bounds on the number of speakers."""

    min_speakers: int | None = None
    max_speakers: int | None = None
    # Speakers to recognise: (name, a 2-10 s sample of their voice as audio file bytes). Sync
    # requests only (the OpenAI route's known_speaker_names/references); never stored.
    known: tuple[tuple[str, bytes], ...] = field(default=(), repr=False)

    def stored(self) -> dict:
        """The form a job row keeps."""
        return {"min_speakers": self.min_speakers, "max_speakers": self.max_speakers}


@dataclass
class Word:
    word: str
    start: float
    end: float
    probability: float
    speaker: str | None = None  # with diarization


@dataclass
class Segment:
    id: int
    start: float
    end: float
    text: str
    avg_logprob: float
    tokens: list[int] = field(default_factory=list)
    no_speech_prob: float = 0.0
    compression_ratio: float = 0.0
    temperature: float = 0.0
    seek: int = 0
    words: list[Word] | None = None
    speaker: str | None = None  # with diarization


@dataclass
class Transcript:
    """The result of one request, or of one consecutive part of it (streaming)."""

    text: str
    segments: list[Segment]
    language: str
    language_probability: float | None
    duration: float
    task: Task = "transcribe"
    # How word times were found ("whisper": cross-attention alignment of the decoded tokens;
    # "whisperx": a wav2vec2 alignment model) and, when the better method could not be used, why.
    word_timestamps: str | None = None
    alignment_note: str | None = None
    # With diarization: each speaker found and their total speaking time.
    speakers: list[dict] | None = None

    @property
    def words(self) -> list[Word]:
        return [w for s in self.segments for w in (s.words or [])]


def join(parts: list[Transcript]) -> Transcript:
    """One transcript from consecutive parts of the same request (segments renumbered)."""
    segments = [replace(s) for part in parts for s in part.segments]
    for n, segment in enumerate(segments):
        segment.id = n
    return replace(parts[0], text=" ".join(s.text for s in segments), segments=segments)


def shifted(transcript: Transcript, seconds: float) -> Transcript:
    """A piece's transcript with its times moved to where the piece starts in the recording."""
    if not seconds:
        return transcript
    frames = int(round(seconds * FRAMES_PER_SECOND))
    segments = [
        replace(
            s,
            start=round(s.start + seconds, 3),
            end=round(s.end + seconds, 3),
            seek=s.seek + frames,
            words=None
            if s.words is None
            else [replace(w, start=round(w.start + seconds, 3), end=round(w.end + seconds, 3)) for w in s.words],
        )
        for s in transcript.segments
    ]
    return replace(transcript, segments=segments)
