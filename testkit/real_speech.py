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

- ``pyannote``: pyannote.audio's bundled two-speaker telephone conversation (``sample.wav``,
  30 s, 16 kHz, MIT; installed with the service's own dependencies), its words from the STM
  transcript beside it and who spoke when from its RTTM (real voices for diarization).

Non-speech (``nonspeech()``: nothing in it should come back as a word), 28 minutes:

- music: Asterisk's music on hold, five instrumental tracks, 18.4 minutes
  (``asterisk-moh-opsound-wav``, CC-BY-SA-3.0 by permission of their authors: Macroform, Manolo
  Camp, Reno Project);
- tones: Asterisk's beeps and two-tone signals (``beep``, ``beeperr``, ``ascending-2tone``,
  ``descending-2tone``, from the English prompts);
- sound effects: the freedesktop sound theme, KDE's Oxygen sounds and GNOME's event sounds,
  97 files, 2.9 minutes (``sound-theme-freedesktop``, CC-BY-SA-3.0 and GPL-2+; ``oxygen-sounds``,
  LGPL-3+; ``gnome-audio``, CC-BY-SA-2.0); the freedesktop theme's spoken channel names
  ("front left", ``audio-channel-*``) are speech and left out;
- generated (``generated()``, seeded, the same every run): DTMF key presses, white, pink and
  brown noise, mains hum, and long silences with room tone and the odd click, 6 minutes.
"""

from __future__ import annotations

import gzip
import io
import re
import wave
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from testkit.speech import normalize as normalize_english

ASTERISK_LANGUAGES = ("en", "es", "fr", "it", "ru")
PACKAGES = [f"asterisk-core-sounds-{lang}-wav" for lang in ASTERISK_LANGUAGES] + [
    "asterisk-core-sounds-en-g722",  # the English prompts at 16 kHz (wideband())
    "pocketsphinx-testdata",
    "asterisk-moh-opsound-wav",
    "sound-theme-freedesktop",
    "oxygen-sounds",
    "gnome-audio",
]
EFFECTS = {  # package -> folder of its sounds
    "sound-theme-freedesktop": Path("/usr/share/sounds/freedesktop/stereo"),
    "oxygen-sounds": Path("/usr/share/sounds"),
    "gnome-audio": Path("/usr/share/sounds"),
}
SPOKEN_EFFECTS = ("audio-channel-",)  # the freedesktop theme's channel names are spoken words
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
    text: str  # the reference, as the package ships it (cleaned: see _reference)
    language: str  # ISO 639-1
    data: bytes | None = None  # generated audio (no file)

    def audio(self) -> bytes:
        return self.data if self.data is not None else self.path.read_bytes()

    def seconds(self) -> float:
        import soundfile

        info = soundfile.info(io.BytesIO(self.audio()))
        return info.frames / info.samplerate


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
            clips.append(Clip(f"asterisk-{language}", name, path, _reference(text, language), language))
    return sorted(clips, key=lambda clip: clip.name)


def _reference(text: str, language: str) -> str:
    """A prompt's text as it is spoken: the references mark where a prompt is continued with
    "..." and add notes in parentheses ("IAX (note: does not say "2")"); the English ones write
    the keys the voice names as "*" and "#"."""
    text = re.sub(r"\([^)]*\)", " ", text).replace("...", " ").replace("…", " ")
    if language == "en":
        text = text.replace("*", " star ").replace("#", " pound ")
    return re.sub(r"\s+", " ", text).strip()


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


def _pyannote() -> list[Clip]:
    folder = pyannote_sample()
    words = [" ".join(line.split()[5:]) for line in (folder / "sample.stm").read_text().splitlines() if line.strip()]
    return [Clip("pyannote", "sample", folder / "sample.wav", " ".join(words), "en")]


def pyannote_sample() -> Path:
    """The folder of pyannote.audio's sample conversation (sample.wav, .stm, .rttm)."""
    import importlib.util

    spec = importlib.util.find_spec("pyannote.audio")
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackage("pip install pyannote.audio (a dependency of whisperx)")
    return Path(next(iter(spec.submodule_search_locations))) / "sample"


SETS = {f"asterisk-{lang}": (lambda lang=lang: _asterisk(lang)) for lang in ASTERISK_LANGUAGES}
SETS["librivox"] = _librivox
SETS["pyannote"] = _pyannote


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


@lru_cache
def _basic():
    from whisper_normalizer.basic import BasicTextNormalizer

    return BasicTextNormalizer()


def normalize(text: str, language: str) -> str:
    """Text as word error rates compare it: English with Whisper's English normaliser
    (testkit.speech), other languages with Whisper's basic one (lower case, bracketed text
    dropped, marks, symbols and punctuation to spaces)."""
    if language == "en":
        return normalize_english(text)
    return re.sub(r"\s+", " ", _basic()(text)).strip()


def corpus_wer(pairs: list[tuple[str, str]], language: str) -> float:
    """Word error rate in percent over all the pairs' words (reference, hypothesis)."""
    import jiwer

    refs = [normalize(r, language) for r, _ in pairs]
    hyps = [normalize(h, language) or "<empty>" for _, h in pairs]
    return 100.0 * jiwer.wer(refs, hyps)


def wer(reference: str, hypothesis: str, language: str) -> float:
    return corpus_wer([(reference, hypothesis)], language)


def lost_tail(reference: str, hypothesis: str, language: str, words: int = 2) -> list[str]:
    """The last ``words`` words of ``reference`` that ``hypothesis`` leaves out (deletions in
    jiwer's alignment; a word heard wrong is a substitution, not lost)."""
    import jiwer

    ref = normalize(reference, language)
    hyp = normalize(hypothesis, language) or "<empty>"
    ref_words = ref.split()
    first = len(ref_words) - words
    out = jiwer.process_words(ref, hyp)
    return [
        ref_words[i]
        for chunk in out.alignments[0]
        if chunk.type == "delete"
        for i in range(chunk.ref_start_idx, chunk.ref_end_idx)
        if i >= first
    ]


def nonspeech(kinds: tuple[str, ...] = ("music", "tones", "effects", "generated")) -> list[Clip]:
    """Non-speech as clips with an empty reference, by kind (MissingPackage if not installed)."""
    out: list[Clip] = []
    if "music" in kinds:
        music = sorted(MUSIC_ON_HOLD.glob("*.wav"))
        if not music:
            raise MissingPackage("apt-get install asterisk-moh-opsound-wav")
        out += [Clip("music", p.stem, p, "", "en") for p in music]
    if "tones" in kinds:
        tones = [SOUNDS / "en" / f"{name}.wav" for name in TONES]
        missing = [t for t in tones if not t.exists()]
        if missing:
            raise MissingPackage(f"apt-get install asterisk-core-sounds-en-wav (for {missing[0]})")
        out += [Clip("tones", p.stem, p, "", "en") for p in tones]
    if "effects" in kinds:
        out += effects()
    if "generated" in kinds:
        out += [Clip("generated", name, Path(f"generated/{name}.wav"), "", "en", data) for name, data in generated()]
    return out


def effects() -> list[Clip]:
    """The sound themes' effects (no spoken ones), each file once."""
    seen: dict[str, Path] = {}
    for package, folder in EFFECTS.items():
        listed = Path("/var/lib/dpkg/info") / f"{package}.list"
        if not listed.exists():
            raise MissingPackage(f"apt-get install {package}")
        for line in listed.read_text().splitlines():
            path = Path(line)
            spoken = path.name.startswith(SPOKEN_EFFECTS)
            if path.parent == folder and path.suffix in (".oga", ".ogg", ".wav") and not spoken:
                seen.setdefault(path.name, path)
    return [Clip("effects", p.stem, p, "", "en") for _, p in sorted(seen.items())]


def generated(rate: int = 16000) -> list[tuple[str, bytes]]:
    """Synthetic non-speech, seeded: (name, 16-bit WAV bytes)."""
    rng = np.random.default_rng(29)

    def seconds(s: float) -> np.ndarray:
        return np.arange(int(s * rate)) / rate

    def white(s: float) -> np.ndarray:
        return rng.standard_normal(int(s * rate))

    def coloured(s: float, power: float) -> np.ndarray:
        spectrum = np.fft.rfft(white(s))
        freqs = np.fft.rfftfreq(int(s * rate), 1 / rate)
        spectrum[1:] /= freqs[1:] ** (power / 2)
        spectrum[0] = 0
        return np.fft.irfft(spectrum, int(s * rate))

    keys = {  # DTMF: (low, high) Hz
        "1": (697, 1209), "2": (697, 1336), "3": (697, 1477), "4": (770, 1209), "5": (770, 1336),
        "6": (770, 1477), "7": (852, 1209), "8": (852, 1336), "9": (852, 1477), "*": (941, 1209),
        "0": (941, 1336), "#": (941, 1477),
    }  # fmt: skip
    presses = []
    for i, key in enumerate("0123456789*#" * 4 + "1234#" * 6):
        low, high = keys[key]
        t = seconds(0.08 + 0.12 * (i % 3))  # key presses of 80-320 ms, as people press them
        gap = np.zeros(int(rate * (0.1 + 0.4 * (i % 4))))
        presses += [np.sin(2 * np.pi * low * t) + np.sin(2 * np.pi * high * t), gap]
    t = seconds(60)
    hum = sum(np.sin(2 * np.pi * 50 * k * t) / k for k in (1, 2, 3, 5))
    room = coloured(150, 1.0) * 0.002  # long silence: room tone about 54 dB under full scale
    for at in rng.integers(0, room.size - 200, 12):  # the odd click of a desk or a chair
        room[at : at + 200] += rng.standard_normal(200) * 0.2 * np.hanning(200)
    sounds = {
        "dtmf": np.concatenate(presses),
        "white-noise": white(30),
        "pink-noise": coloured(45, 1.0),
        "brown-noise": coloured(45, 2.0),
        "mains-hum": hum,
        "room-tone": room,
    }
    out = []
    for name, samples in sounds.items():
        peak = 0.5 if name != "room-tone" else 1.0
        scaled = samples / max(1e-9, np.abs(samples).max()) * peak if name != "room-tone" else samples
        out.append((name, _wav((np.clip(scaled, -1, 1) * 32767).astype("<i2"), rate)))
    return out


QUIET_DB = (-20, -30)  # the soft talker's level under the loud one's


def quiet_speech(n: int = 12) -> list[Clip]:
    """Recorded speech where one talker is soft: a clip at full level, a pause, then another
    clip 20 or 30 dB quieter (a far end of a meeting table, a soft voice on a call), over room
    tone. The reference is both clips' words: the words a VAD or a no-speech guard loses here
    are the cost of their thresholds. Clips from asterisk-en and librivox, ``n`` pairs."""
    from faster_whisper import decode_audio

    speech = sample("asterisk-en", n) + list(clips("librivox"))
    rng = np.random.default_rng(7)
    out = []
    for i in range(n):
        loud, soft = speech[i], speech[(i + n // 2 + 1) % len(speech)]
        level = QUIET_DB[i % len(QUIET_DB)]
        first = decode_audio(str(loud.path)) * 0.8 / max(1e-9, np.abs(decode_audio(str(loud.path))).max())
        second = decode_audio(str(soft.path))
        second = second * 0.8 / max(1e-9, np.abs(second).max()) * 10 ** (level / 20)
        pause = np.zeros(16000)
        samples = np.concatenate([first, pause, second, pause])
        samples = samples + rng.standard_normal(samples.size) * 0.002  # room tone, ~54 dB down
        data = _wav((np.clip(samples, -1, 1) * 32767).astype("<i2"), 16000)
        name = f"{loud.name.replace('/', '_')}+{soft.name.replace('/', '_')}@{level}dB"
        out.append(Clip("quiet", name, Path(f"quiet/{name}.wav"), f"{loud.text} {soft.text}", "en", data))
    return out


TELEPHONE = {  # name -> (container, codec, bit rate): speech as phone systems record and send it
    "pcm-8k": ("wav", "pcm_s16le", None),
    "mulaw": ("wav", "pcm_mulaw", None),  # G.711 u-law: North America, Japan
    "alaw": ("wav", "pcm_alaw", None),  # G.711 A-law: the rest of the world
    "mp3-8k": ("mp3", "libmp3lame", 16000),  # narrowband MP3, as voicemail systems mail it
    "amr": ("amr", "libopencore_amrnb", 12200),  # AMR-NB 12.2 kbit/s: mobile voice, MMS
}


def wideband(clip: Clip) -> Clip:
    """An Asterisk prompt as its package records it at 16 kHz (G.722, ``asterisk-core-sounds-
    <lang>-g722``; the WAV prompts are 8 kHz), as a 16-bit WAV: the same speech as ``clip``
    before the telephone band. Other clips (16 kHz already) come back as they are."""
    if not clip.set.startswith("asterisk-"):
        return clip
    source = clip.path.with_suffix(".g722")
    if not source.exists():
        raise MissingPackage(f"apt-get install asterisk-core-sounds-{clip.language}-g722 (for {source})")
    import av

    with av.open(str(source), format="g722") as container:
        pcm = np.concatenate([frame.to_ndarray().ravel() for frame in container.decode(audio=0)])
    return Clip(clip.set, clip.name, source, clip.text, clip.language, _wav(pcm.astype("<i2"), 16000))


def _wav(pcm: np.ndarray, rate: int) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return buffer.getvalue()


def telephone(clip: Clip, kind: str) -> bytes:
    """``clip`` at 8 kHz, encoded as ``kind`` (a key of TELEPHONE), with PyAV's FFmpeg."""
    import av
    from faster_whisper import decode_audio

    container, codec, bit_rate = TELEPHONE[kind]
    samples = decode_audio(io.BytesIO(clip.audio()), sampling_rate=8000)
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as out:
        stream = out.add_stream(codec, rate=8000, layout="mono")
        if bit_rate:
            stream.bit_rate = bit_rate
        frame = av.AudioFrame.from_ndarray(pcm[None, :], format="s16", layout="mono")
        frame.sample_rate = 8000
        resampler = av.AudioResampler(format=stream.format.name, layout="mono", rate=8000)
        for converted in resampler.resample(frame) + resampler.resample(None):
            for packet in stream.encode(converted):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buffer.getvalue()


def pyannote_turns() -> list[tuple[float, float, str]]:
    """Who spoke when in pyannote's sample conversation: (start, end, speaker) from its RTTM."""
    turns = []
    for line in (pyannote_sample() / "sample.rttm").read_text().splitlines():
        fields = line.split()
        if fields and fields[0] == "SPEAKER":
            start, duration = float(fields[3]), float(fields[4])
            turns.append((start, start + duration, fields[7]))
    return turns
