"""Test speech: the fixtures in tests/data and word error rate against their transcripts.

Shared by the tests and the load tests (loadtests/bench.py scores the service with corpus_wer).
Every WER in the project compares text after Whisper's own English normaliser (the
``whisper-normalizer`` package: numbers to digits, contractions expanded, British spellings to
American, fillers and bracketed noises dropped), so "twenty-five" and "25" are the same words.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

import jiwer

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"


@lru_cache
def transcripts() -> dict[str, str]:
    return {k: v["text"] for k, v in json.loads((DATA / "transcripts.json").read_text()).items()}


def audio(name: str) -> bytes:
    return (DATA / name).read_bytes()


@lru_cache
def _english():
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer()


def normalize(text: str) -> str:
    """English text as Whisper's evaluations compare it (lower case, no punctuation, numbers
    as digits, contractions and spelling variants made one)."""
    return re.sub(r"\s+", " ", _english()(text)).strip()


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate in percent, after Whisper's English normaliser."""
    return 100.0 * jiwer.wer(normalize(reference), normalize(hypothesis) or "<empty>")


def corpus_wer(pairs: list[tuple[str, str]]) -> float:
    refs = [normalize(r) for r, _ in pairs]
    hyps = [normalize(h) or "<empty>" for _, h in pairs]
    return 100.0 * jiwer.wer(refs, hyps)
