"""Recorded human speech from Debian packages, with the references the packages ship (#29).

Nothing downloads at test time: the packages are installed with the machine's package manager
(`.ci/run` installs what the tests use; ``PACKAGES`` lists them all), and a set whose package is
missing is reported as such, not silently skipped.

Sets, their sources and licences:

- ``asterisk-en``, ``-es``, ``-fr``, ``-it``, ``-ru``: Asterisk's core voice prompts, telephone
  audio as phone systems play it (8 kHz, 16-bit PCM WAV), read by professional voices: Allison
  Smith (en, es), June Wallack (fr), the it and ru voices of their packages; CC-BY-SA-3.0
  (`/usr/share/doc/asterisk-core-sounds-<lang>/copyright`). References: the packages'
  ``core-sounds-<lang>.txt.gz`` ("name: text" per prompt). Digits, letters, the phonetic
  alphabet and silences are left out (one word each, or none); prompts of fewer than
  ``MIN_WORDS`` words too.
- ``librivox``: five utterances of LibriVox's public-domain reading of *Sense and Sensibility*
  (16 kHz), from ``pocketsphinx-testdata`` (BSD-2), with its lower-case transcription.

Non-speech (``nonspeech()``: nothing in it should come back as a word): Asterisk's music on hold,
five tracks, 18.4 minutes (``asterisk-moh-opsound-wav``, CC-BY-SA-3.0 by permission of their
authors: Macroform, Manolo Camp, Reno Project), and its beeps and two-tone signals
(``beep``, ``beeperr``, ``ascending-2tone``, ``descending-2tone``, from the English prompts).
"""

from __future__ import annotations

import gzip
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from testkit.speech import normalize as normalize_english

ASTERISK_LANGUAGES = ("en", "es", "fr", "it", "ru")
PACKAGES = [f"asterisk-core-sounds-{lang}-wav" for lang in ASTERISK_LANGUAGES] + [
    "pocketsphinx-testdata",
    "asterisk-moh-opsound-wav",
]
SOUNDS = Path("/usr/share/asterisk/sounds")
MUSIC_ON_HOLD = Path("/usr/share/asterisk/moh")
TONES = ("beep", "beeperr", "ascending-2tone", "descending-2tone")
DOCS = Path("/usr/share/doc")
POCKETSPHINX = Path("/usr/share/pocketsphinx/test/data")
MIN_WORDS = 4
SKIPPED_FOLDERS = ("digits", "letters", "phonetic", "silence")


@dataclass(frozen=True)
class Clip:
    set: str
    name: str
    path: Path
    text: str  # the reference, as the package ships it
    language: str  # ISO 639-1

    def audio(self) -> bytes:
        return self.path.read_bytes()


class MissingPackage(RuntimeError):
    """A set's package is not installed: the message says which, and how to install it."""


def _asterisk(language: str) -> list[Clip]:
    reference = DOCS / f"asterisk-core-sounds-{language}" / f"core-sounds-{language}.txt.gz"
    folder = SOUNDS / language
    if not reference.exists() or not folder.exists():
        raise MissingPackage(f"apt-get install asterisk-core-sounds-{language}-wav (for {reference} and {folder})")
    clips = []
    for line in gzip.decompress(reference.read_bytes()).decode("utf-8").splitlines():
        name, sep, text = line.partition(":")
        name, text = name.strip(), text.strip()
        if not sep or not text or line.startswith(";") or name.split("/")[0] in SKIPPED_FOLDERS:
            continue
        if len(text.split()) < MIN_WORDS:
            continue
        path = folder / f"{name}.wav"
        if path.exists():  # a few references name prompts the package does not ship
            clips.append(Clip(f"asterisk-{language}", name, path, text, language))
    return sorted(clips, key=lambda clip: clip.name)


def _librivox() -> list[Clip]:
    folder = POCKETSPHINX / "librivox"
    if not (folder / "transcription").exists():
        raise MissingPackage("apt-get install pocketsphinx-testdata")
    clips = []
    for line in (folder / "transcription").read_text().splitlines():
        match = re.fullmatch(r"<s>(.*)</s>\s*\((\S+)\)", line.strip())
        if match:
            text, name = match.group(1).strip(), match.group(2)
            clips.append(Clip("librivox", name, folder / f"{name}.wav", text, "en"))
    return clips


SETS = {f"asterisk-{lang}": (lambda lang=lang: _asterisk(lang)) for lang in ASTERISK_LANGUAGES}
SETS["librivox"] = _librivox


@lru_cache
def clips(set_name: str) -> tuple[Clip, ...]:
    """Every clip of ``set_name`` (a key of SETS); MissingPackage if its package is not installed."""
    return tuple(SETS[set_name]())


def sample(set_name: str, n: int) -> list[Clip]:
    """``n`` clips of the set spread evenly over it (the same ones every run)."""
    every = clips(set_name)
    if n >= len(every):
        return list(every)
    return [every[round(i * (len(every) - 1) / max(1, n - 1))] for i in range(n)]


def normalize(text: str, language: str) -> str:
    """Text as word error rates compare it: English as testkit.speech does; other languages as
    Whisper's basic normaliser does (NFKC, lower case, marks, symbols and punctuation to spaces)."""
    if language == "en":
        return normalize_english(text)
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if unicodedata.category(c)[0] in "MSP" else c for c in text)
    return re.sub(r"\s+", " ", text).strip()


def nonspeech() -> list[Path]:
    """Recorded non-speech: the music on hold, then the tones (MissingPackage if not installed)."""
    music = sorted(MUSIC_ON_HOLD.glob("*.wav"))
    if not music:
        raise MissingPackage("apt-get install asterisk-moh-opsound-wav")
    tones = [SOUNDS / "en" / f"{name}.wav" for name in TONES]
    missing = [t for t in tones if not t.exists()]
    if missing:
        raise MissingPackage(f"apt-get install asterisk-core-sounds-en-wav (for {missing[0]})")
    return music + tones
