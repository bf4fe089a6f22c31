"""``model=auto``: the served model for a recording, from its duration, language and the quality
asked, by the rules of the catalog (configs/models.yaml, ``auto:``), not by code.

A rule names a quality, optionally the longest audio it is for, and models in order of
preference; the first rule that matches picks the first of its models that is served and can
do the job: an English-only model transcribes English only (a recording whose language is not
given is detected first, by a multilingual model, when an English-only one could be picked).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from serve_app.core.errors import ServiceError

Quality = Literal["speed", "balanced", "accuracy"]
QUALITIES: tuple[str, ...] = ("speed", "balanced", "accuracy")
DEFAULT_QUALITY: Quality = "balanced"


class NoModelFits(ServiceError):
    status_code = 400
    code = "no_model_fits"


@dataclass(frozen=True)
class AutoRule:
    quality: str
    models: tuple[str, ...]
    max_seconds: float | None = None  # None: any length (also audio whose length is unknown)

    @classmethod
    def parse(cls, raw: dict) -> AutoRule:
        unknown = set(raw) - {"quality", "models", "max_seconds"}
        if unknown or raw.get("quality") not in QUALITIES or not raw.get("models"):
            raise ValueError(
                f"auto rule {raw!r}: needs quality ({'|'.join(QUALITIES)}) and models, may have max_seconds"
            )
        return cls(raw["quality"], tuple(raw["models"]), raw.get("max_seconds"))

    def matches(self, quality: str, seconds: float | None) -> bool:
        if quality != self.quality:
            return False
        return self.max_seconds is None or (seconds is not None and seconds <= self.max_seconds)


@dataclass(frozen=True)
class ModelChoice:
    """The choice for one request: its quality and task, the served models (name ->
    multilingual) and the catalog's rules."""

    quality: str
    task: str
    served: tuple[tuple[str, bool], ...]
    rules: tuple[AutoRule, ...]

    def _multilingual(self, model: str) -> bool | None:
        return dict(self.served).get(model)

    def fits(self, model: str, language: str | None) -> bool:
        multilingual = self._multilingual(model)
        if multilingual is None:
            return False  # not served here
        return multilingual or (language == "en" and self.task == "transcribe")

    def _candidates(self) -> list[str]:
        return [m for rule in self.rules if rule.quality == self.quality for m in rule.models]

    def check(self, language: str | None) -> None:
        """Refuse now a request no rule could serve, whatever the audio (400 no_model_fits)."""
        if not any(self.fits(m, language) or (language is None and self.detector()) for m in self._candidates()):
            raise NoModelFits(self._why(language))

    def detector(self) -> str | None:
        """A served multilingual model to detect the language with, when the choice depends on it."""
        candidates = self._candidates()
        if not any(self._multilingual(m) is False for m in candidates):
            return None  # no English-only model could be picked: the language does not matter
        return next((m for m in candidates if self._multilingual(m)), None) or next(
            (name for name, multi in self.served if multi), None
        )

    def pick(self, seconds: float | None, language: str | None) -> str:
        for rule in self.rules:
            if rule.matches(self.quality, seconds):
                for model in rule.models:
                    if self.fits(model, language):
                        return model
        raise NoModelFits(self._why(language))

    def _why(self, language: str | None) -> str:
        served = ", ".join(name for name, _ in self.served)
        what = f"'{language}'" if language else "audio of an unknown language"
        return (
            f"No served model fits quality={self.quality}, task={self.task} for {what} "
            f"(served: {served}); name a model, or give the language."
        )
