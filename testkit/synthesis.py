"""Offline speech synthesis for test and benchmark audio: Piper voices, WAV and FLAC writers,
and the Harvard sentences (IEEE 1969, phonetically balanced English) they speak."""

from __future__ import annotations

import io
import wave
from pathlib import Path

import av
import numpy as np

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


def wav_bytes(pcm: np.ndarray, rate: int = 16000) -> bytes:
    """A mono 16-bit WAV file of ``pcm``."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm.astype(np.int16).tobytes())
    return buf.getvalue()


def write_wav(path: Path, pcm: np.ndarray, rate: int) -> None:
    path.write_bytes(wav_bytes(pcm, rate))


def write_flac(path: Path, pcm: np.ndarray, rate: int) -> None:
    with av.open(str(path), "w", format="flac") as out:
        stream = out.add_stream("flac", rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1).astype(np.int16), format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
