"""Word post-processing: segments made of words, sentences cut at word times, edges out of silence."""

from __future__ import annotations

import zlib
from dataclasses import replace

import numpy as np

from serve_app.audio.levels import snap_to_sound
from serve_app.core.transcript import Segment, Word

# faster-whisper's punctuation that attaches to the word after / before it when words are timed.
PREPEND_PUNCTUATION = "\"'“¿([{-"
APPEND_PUNCTUATION = "\"'.。,，!！?？:：”)]}、"
SENTENCE_END = (".", "?", "!", "。", "？", "！")


def compression_ratio(text: str) -> float:
    """faster-whisper's measure, kept here: importing faster_whisper.transcribe loads
    CTranslate2, which the API process must not pay for."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data))


def from_words(segment: Segment, words: list[Word], tokenizer, **changes) -> Segment:
    """A segment made of some of ``segment``'s words (or words moved to it): their text, their
    tokens, their span; the decode scores stay the source's."""
    text = "".join(w.word for w in words).strip()  # words carry their leading spaces
    return replace(
        segment,
        text=text,
        words=words,
        tokens=tokenizer.encode(" " + text),
        compression_ratio=round(compression_ratio(text), 4),
        **{"start": words[0].start, "end": words[-1].end, **changes},
    )


def split_sentences(segment: Segment, tokenizer, pause: float = 1.0) -> list[Segment]:
    """Cut a chunk's segment into sentences at its words' times.

    A sentence ends after a word that ends one (``.?!``) or before a pause of ``pause`` seconds.
    Tokens are those of each sentence's text; the decode scores stay those of the chunk.
    """
    words = segment.words or []
    if not words:
        return [segment]
    groups: list[list[Word]] = [[]]
    for word, following in zip(words, words[1:] + [None]):
        groups[-1].append(word)
        if following is not None and (word.word.rstrip().endswith(SENTENCE_END) or following.start - word.end >= pause):
            groups.append([])
    if len(groups) == 1:
        return [segment]
    return [from_words(segment, group, tokenizer) for group in groups]


def snap_words(segments: list[Segment], loud: np.ndarray) -> None:
    """Pull word edges out of silence (see ``snap_to_sound``); segments follow their words."""
    for segment in segments:
        if not segment.words:
            continue
        for word in segment.words:
            word.start, word.end = snap_to_sound(word.start, word.end, loud)
        segment.start, segment.end = segment.words[0].start, segment.words[-1].end
