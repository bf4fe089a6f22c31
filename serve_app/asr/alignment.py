"""Word times from WhisperX forced alignment, where a local wav2vec2 model exists for a language.

No alignment model ships offline here, so by default every language falls back to Whisper's
own cross-attention word times (serve_app/engine.py); ``STT_ALIGN_MODELS='{"en": "/models/wav2vec2-en"}'``
turns WhisperX alignment on per language. A request never fails because of alignment: when a
model is missing or alignment breaks, the caller keeps Whisper's words and says why.
"""

from __future__ import annotations

import threading

import numpy as np

from serve_app.core.transcript import Segment, Word


class AlignmentUnavailable(Exception):
    """No usable alignment model for a language; the message says why."""


class Aligner:
    """WhisperX alignment models (local folders), loaded on first use per language."""

    def __init__(self, models: dict[str, str], device: str = "cpu"):
        self.paths = dict(models)
        self.device = device
        self._loaded: dict[str, tuple[object, dict]] = {}
        self._lock = threading.Lock()

    def supports(self, language: str) -> bool:
        return language in self.paths

    def _model(self, language: str):
        with self._lock:
            if language not in self._loaded:
                from whisperx.alignment import load_align_model

                _offline_sentence_splitter()
                try:
                    self._loaded[language] = load_align_model(
                        language, self.device, model_name=self.paths[language], model_cache_only=True
                    )
                except Exception as exc:  # a broken folder must not break requests
                    raise AlignmentUnavailable(
                        f"the alignment model for '{language}' at {self.paths[language]} did not load: {exc}"
                    ) from exc
            return self._loaded[language]

    def align(self, segments: list[Segment], samples: np.ndarray, language: str) -> list[list[Word]]:
        """WhisperX's words for each segment; raises AlignmentUnavailable."""
        if not self.supports(language):
            raise AlignmentUnavailable(f"no WhisperX alignment model is configured for '{language}' (STT_ALIGN_MODELS)")
        from whisperx.alignment import align

        model, metadata = self._model(language)
        aligned = []
        for segment in segments:
            try:
                result = align(
                    [{"start": segment.start, "end": segment.end, "text": segment.text}],
                    model,
                    metadata,
                    samples,
                    self.device,
                    return_char_alignments=False,
                )
            except Exception as exc:
                raise AlignmentUnavailable(f"WhisperX alignment failed: {type(exc).__name__}: {exc}") from exc
            words = [w for s in result["segments"] for w in s.get("words", [])]
            aligned.append(_timed(words, segment))
        return aligned


class _WholeText:
    """Stands in for nltk's punkt splitter: each of our segments is aligned as one piece."""

    @staticmethod
    def span_tokenize(text: str):
        return [(0, len(text))]


def _offline_sentence_splitter() -> None:
    """WhisperX splits segments into sentences with nltk's punkt data, downloading it when it
    is missing; offline that download fails. Our segments are sentences (or VAD chunks whose
    words we keep together) already, so without the data a whole-text splitter is used."""
    import nltk
    import whisperx.alignment as wxa

    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
    except LookupError:
        wxa.nltk_load = lambda *_args, **_kw: _WholeText()


def _timed(words: list[dict], segment: Segment) -> list[Word]:
    """WhisperX leaves words it cannot align (digits, symbols) without times: borrow neighbours'."""
    out: list[Word] = []
    for i, w in enumerate(words):
        start = w.get("start")
        end = w.get("end")
        if start is None:
            start = out[-1].end if out else segment.start
        if end is None:
            following = next((x["start"] for x in words[i + 1 :] if x.get("start") is not None), segment.end)
            end = max(start, following)
        out.append(
            Word(
                " " + w["word"].strip(),
                round(float(start), 3),
                round(float(end), 3),
                round(float(w.get("score", 0.0)), 4),
            )
        )
    return out
