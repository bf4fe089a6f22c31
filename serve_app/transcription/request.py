"""What a caller asks for, validated in one place for every entry point (REST, OpenAI, Python handle).

``TranscriptionRequest`` checks each option on its own (types, ranges, lengths); ``resolve``
checks it against what the chosen model can do and gives the options the pipeline runs with.
Every mistake has one error code wherever it is made (README, "Errors").
"""

from __future__ import annotations

import unicodedata
from dataclasses import asdict, dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from serve_app.asr.autoselect import DEFAULT_QUALITY, Quality
from serve_app.asr.catalog import WHISPER_LANGUAGES, ModelSpec
from serve_app.audio.preprocess import PrepareOptions
from serve_app.core.bounds import MAX_PROMPT_CHARS, MAX_SPEAKERS
from serve_app.core.errors import InvalidParameter, UnsupportedLanguage
from serve_app.core.transcript import DecodeOptions, DiarizeOptions, Task
from serve_app.jobs.service import JobSpec


class TranscriptionRequest(BaseModel):
    """The options of one transcription, as any entry point receives them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | None = Field(
        None,
        max_length=200,
        description="A served model, or 'auto' (chosen by the catalog's rules); default from settings.",
    )
    quality: Quality | None = Field(None, description="model=auto only: speed, balanced (default) or accuracy.")
    language: str | None = Field(None, max_length=20, pattern=r"^[A-Za-z_-]+$", description="ISO code; none: detected.")
    task: Task = "transcribe"
    beam_size: int | None = Field(None, ge=1, le=10, description="Beam width; default from settings.")
    prompt: str | None = Field(
        None, max_length=MAX_PROMPT_CHARS, description="Text that came before, or spellings to prefer."
    )
    temperature: float = Field(0.0, ge=0, le=1, description="0: beam search; above 0: sampling.")
    timestamps: bool = Field(
        False,
        description="Sentence-sized segments (cut at word times; about 10% slower on CPU); "
        "false: one segment per <= 30 s chunk of speech.",
    )
    word_timestamps: bool = Field(False, description="Start and end of every word.")
    normalize: bool = True
    vad: bool = Field(True, description="Skip silence with voice activity detection.")
    diarize: bool = Field(False, description="Label every segment and word with its speaker (who spoke when).")
    min_speakers: int | None = Field(None, ge=1, le=MAX_SPEAKERS, description="diarize only: at least this many.")
    max_speakers: int | None = Field(None, ge=1, le=MAX_SPEAKERS, description="diarize only: at most this many.")

    @field_validator("model", "language", "prompt", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip()
            return value or None
        return value

    @field_validator("language")
    @classmethod
    def _lower(cls, value: str | None) -> str | None:
        return value.lower() if value else value

    @field_validator("prompt")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        # NUL and other control characters are no text to prompt with (and PostgreSQL's jsonb,
        # where the job row keeps the options, refuses NUL outright).
        if value and any(unicodedata.category(ch) == "Cc" and ch not in "\t\n\r" for ch in value):
            raise ValueError("must not contain control characters")
        return value

    @model_validator(mode="after")
    def _speakers(self) -> TranscriptionRequest:
        if not self.diarize and (self.min_speakers is not None or self.max_speakers is not None):
            raise ValueError("min_speakers and max_speakers apply with diarize=true only")
        if self.min_speakers and self.max_speakers and self.min_speakers > self.max_speakers:
            raise ValueError("min_speakers must not be above max_speakers")
        return self

    @classmethod
    def parse(cls, **fields: Any) -> TranscriptionRequest:
        """Validate ``fields``; a mistake raises InvalidParameter naming the field."""
        try:
            return cls(**fields)
        except ValidationError as exc:
            first = exc.errors()[0]
            param = ".".join(str(p) for p in first.get("loc", ())) or None
            message = "; ".join(f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err['msg']}" for err in exc.errors())
            raise InvalidParameter(message, param=param) from None

    def resolve_auto(self, *, default_beam_size: int) -> Resolved:
        """``model=auto``: the options, the model left to the catalog's rules once the audio is
        known (the caller checks that some served model can fit)."""
        if self.language is not None and self.language not in WHISPER_LANGUAGES:
            raise UnsupportedLanguage(
                f"Language '{self.language}' is not a Whisper language code (see /api/v1/languages).", param="language"
            )
        return Resolved(
            AUTO,
            self._decode(self.language, default_beam_size),
            self._prepare(),
            self.quality or DEFAULT_QUALITY,
            self._diarize(),
        )

    def _decode(self, language: str | None, default_beam_size: int) -> DecodeOptions:
        return DecodeOptions(
            task=self.task,
            language=language,
            beam_size=self.beam_size or default_beam_size,
            initial_prompt=self.prompt,
            temperature=self.temperature,
            timestamps=self.timestamps,
            # Diarization splits segments where the speaker changes: it needs the words' times.
            word_timestamps=self.word_timestamps or self.diarize,
        )

    def _diarize(self) -> DiarizeOptions | None:
        return DiarizeOptions(self.min_speakers, self.max_speakers) if self.diarize else None

    def _prepare(self) -> PrepareOptions:
        return PrepareOptions(normalize=self.normalize, vad=self.vad)

    def resolve(self, spec: ModelSpec, *, default_beam_size: int) -> Resolved:
        """The options to run with, once the request is checked against what ``spec`` can do."""
        if self.quality is not None:
            raise InvalidParameter("quality applies to model=auto only.", param="quality")
        language = self.language
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
        if self.task not in spec.tasks:
            raise InvalidParameter(
                f"Model '{spec.name}' cannot {self.task}; use a multilingual model such as 'base'.",
                code="unsupported_task",
                status_code=400,
                param="model",
            )
        # English-only: nothing to detect.
        decode = self._decode(language if spec.multilingual else "en", default_beam_size)
        return Resolved(spec.name, decode, self._prepare(), diarize=self._diarize())


AUTO = "auto"


@dataclass(frozen=True)
class Resolved:
    """A checked request: the served model and what the Preprocessor and Transcriber run with."""

    model: str  # a served model, or AUTO: chosen once the audio is known
    decode: DecodeOptions
    prepare: PrepareOptions
    quality: str | None = None  # model=auto's
    diarize: DiarizeOptions | None = None

    def job_spec(self) -> JobSpec:
        """What a job row records of this request."""
        options = {"decode": asdict(self.decode), "prepare": asdict(self.prepare)}
        if self.diarize is not None:
            options["diarize"] = self.diarize.stored()
        if self.quality:
            options["quality"] = self.quality
        return JobSpec(self.model, self.decode.language, self.decode.task, options)

    @classmethod
    def of_job(cls, model: str, options: dict) -> Resolved:
        return cls(
            model,
            DecodeOptions(**options.get("decode", {})),
            PrepareOptions(**options.get("prepare", {})),
            options.get("quality"),
            DiarizeOptions(**options["diarize"]) if options.get("diarize") is not None else None,
        )
