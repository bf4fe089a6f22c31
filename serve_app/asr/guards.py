"""Keeping what Whisper invents where nobody speaks out of transcripts (#29).

Whisper, given music, a tone, a click or room noise, often answers with words: "Thank you.",
"you", "So.", "Mhm.", or one phrase over and over. The VAD keeps most non-speech from the model;
these guards judge what gets through, from what the decode itself says about its text:

- **no speech**: Whisper's own rule (its ``no_speech_threshold`` and ``logprob_threshold``), at
  0.5 where Whisper has 0.6: the decoder thought there was likely no speech (probability of its
  no-speech token > 0.5) and is unsure of the words it wrote anyway (average log probability
  < -1).
- **unsure words**: a decode the decoder was unsure of (average log probability < -0.4) whose
  words are improbable: mean word probability < 0.35, or a first word under 0.05 ("Thank you."
  on an alert sound: 0.00 and 0.97). Word probabilities come from the cross-attention
  alignment; a decode that asked for no words has its words aligned for this only when it is
  suspect.
- **shared windows**: a member of a packed window is judged alone: with its words under 0.6 on
  average it is decoded again by itself (the window's no-speech and log probabilities are its
  neighbours' too), then judged by the rules above. ("Ooh." on an alert sound packed with
  speech got through before this.)
- **loops**: a run of tokens repeated over and over ("Thank you. Thank you. Thank you...")
  is cut to its first occurrence; a suspect decode still as repetitive as Whisper's
  ``compression_ratio_threshold`` (2.4) allows after that is dropped. (Not a sure one: Russian
  prompts decoded right reach 2.5, their UTF-8 being two bytes a letter.)

Tuned on the real corpus (testkit/real_speech.py): of 240 segments invented on 28 minutes of
non-speech by tiny.en and base with the VAD on and off, these rules drop 230 (every one of
those with the VAD on); of 567 segments of real speech in five languages, none.
``python -m loadtests.nonspeech`` measures both sides of the trade: invented words per hour of
non-speech, and words lost on speech and on a soft talker, with the guards off and on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

LOOP_MIN_TOKENS = 12  # a repeated run is a loop when its repeats cover at least this many tokens
LOOP_MIN_REPEATS = 3  # ... and it occurs at least this many times in a row
LOOP_MAX_PERIOD = 24  # the longest repeated run looked for, in tokens


@dataclass(frozen=True)
class SpeechGuards:
    no_speech_prob: float = 0.5
    logprob: float = -1.0
    suspect_logprob: float = -0.4
    word_probability: float = 0.35  # mean over the decode's words
    first_word_probability: float = 0.05
    member_word_probability: float = 0.6  # a shared window's member under it is decoded alone
    compression_ratio: float = 2.4

    def suspect(self, avg_logprob: float) -> bool:
        """Whether a decode's words must be looked at (aligned, if nobody asked for them)."""
        return avg_logprob < self.suspect_logprob

    def invented(self, no_speech_prob: float, avg_logprob: float, word_probs: Sequence[float] | None) -> bool:
        """Whether a decode's text is one Whisper made up (see the module's docstring)."""
        if no_speech_prob > self.no_speech_prob and avg_logprob < self.logprob:
            return True
        return self.suspect(avg_logprob) and self.unsure(word_probs)

    def unsure(self, word_probs: Sequence[float] | None, mean: float | None = None) -> bool:
        """Words improbable: their mean under ``mean`` (``word_probability`` unless given), or
        the first of them under ``first_word_probability``."""
        if not word_probs:
            return False
        limit = self.word_probability if mean is None else mean
        return sum(word_probs) / len(word_probs) < limit or word_probs[0] < self.first_word_probability

    def recheck(self, word_probs: Sequence[float] | None) -> bool:
        """Whether a member of a shared window is decoded again alone, where the rules above
        judge it with its own no-speech and log probabilities (a shared window's are its
        neighbours' too). Stricter than dropping: a second look costs a window, not words."""
        return self.unsure(word_probs, self.member_word_probability)

    def too_repetitive(self, ratio: float, avg_logprob: float) -> bool:
        return ratio > self.compression_ratio and self.suspect(avg_logprob)


def cut_loops(tokens: list[int]) -> list[int]:
    """``tokens`` with every run repeated ``LOOP_MIN_REPEATS`` or more times in a row (covering
    ``LOOP_MIN_TOKENS`` or more) cut to its first occurrence. "no, no, no" stays: 6 tokens."""
    out = list(tokens)
    start = 0
    while start < len(out):
        cut = False
        for period in range(1, min(LOOP_MAX_PERIOD, (len(out) - start) // LOOP_MIN_REPEATS) + 1):
            unit = out[start : start + period]
            repeats = 1
            while out[start + repeats * period : start + (repeats + 1) * period] == unit:
                repeats += 1
            if repeats >= LOOP_MIN_REPEATS and repeats * period >= LOOP_MIN_TOKENS:
                rest = out[start + repeats * period :]
                if rest == unit[: len(rest)]:  # a loop the length limit cut mid-run: all of it
                    rest = []
                out[start + period :] = rest
                cut = True
                break
        if not cut:
            start += 1
    return out
