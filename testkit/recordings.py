"""Long recordings and decompression bombs built from the speech fixtures, for tests and load tests.

``long_recording`` strings the Harvard sentence files together (with pauses, as a talk has
them) to any length and encodes it as one file; its reference text is theirs, in order.
``bomb`` is a tiny file of silence that decodes to far more audio than the limits allow.
"""

from __future__ import annotations

import io

import av
import numpy as np

from serve_app.audio.decode import decode
from serve_app.audio.pieces import SAMPLE_RATE
from testkit.cache import kept
from testkit.speech import audio, transcripts

SENTENCES = [f"harvard_0{n}.wav" for n in range(1, 9)] + ["harvard_long.flac"]
PAUSE_SECONDS = 0.7


def long_recording(seconds: float, fmt: str = "mp3") -> tuple[bytes, str, float]:
    """About ``seconds`` of speech as one ``fmt`` file (mp3, opus, flac): bytes, reference
    text, exact duration. Made once and kept between runs (testkit/cache.py)."""
    recipe = {"seconds": seconds, "fmt": fmt, "sentences": SENTENCES, "pause": PAUSE_SECONDS, "v": 1}
    data, facts = kept("long", recipe, lambda: _long_recording(seconds, fmt))
    return data, facts["text"], facts["seconds"]


def _long_recording(seconds: float, fmt: str) -> tuple[bytes, dict]:
    texts = transcripts()
    clips = [(decode(audio(name)), texts[name]) for name in SENTENCES]
    pause = np.zeros(int(PAUSE_SECONDS * SAMPLE_RATE), np.float32)
    pieces, words, total = [], [], 0
    while total < seconds * SAMPLE_RATE:
        for samples, text in clips:
            pieces += [samples, pause]
            words.append(text)
            total += samples.size + pause.size
            if total >= seconds * SAMPLE_RATE:
                break
    pcm = np.concatenate(pieces)
    return encode(pcm, fmt), {"text": " ".join(words), "seconds": pcm.size / SAMPLE_RATE}


def encode(pcm: np.ndarray, fmt: str) -> bytes:
    codec, container, rate, layout = {
        "mp3": ("libmp3lame", "mp3", 16_000, "mono"),
        "opus": ("libopus", "ogg", 48_000, "mono"),
        "flac": ("flac", "flac", 16_000, "mono"),
    }[fmt]
    out = io.BytesIO()
    with av.open(out, "w", format=container) as box:
        stream = box.add_stream(codec, rate=rate, layout=layout)
        if fmt == "mp3":
            stream.bit_rate = 32_000
        resampler = av.AudioResampler(format=stream.format.name, layout=layout, rate=rate)
        step = SAMPLE_RATE * 10
        for start in range(0, pcm.size, step):
            frame = av.AudioFrame.from_ndarray(pcm[start : start + step].reshape(1, -1), format="flt", layout="mono")
            frame.sample_rate = SAMPLE_RATE
            for resampled in resampler.resample(frame):
                for packet in stream.encode(resampled):
                    box.mux(packet)
        for resampled in resampler.resample(None):
            for packet in stream.encode(resampled):
                box.mux(packet)
        for packet in stream.encode(None):
            box.mux(packet)
    return out.getvalue()


def bomb(hours: float = 6.0) -> bytes:
    """Digital silence as FLAC with no length in its header: a few KB that decode to ``hours``."""
    samples = int(hours * 3600 * SAMPLE_RATE)
    out = io.BytesIO()
    with av.open(out, "w", format="flac") as box:
        stream = box.add_stream("flac", rate=SAMPLE_RATE, layout="mono")
        stream.codec_context.options = {"compression_level": "12", "frame_size": "65535"}
        block = np.zeros((1, SAMPLE_RATE * 60), np.int16)
        for _ in range(samples // block.shape[1]):
            frame = av.AudioFrame.from_ndarray(block, format="s16", layout="mono")
            frame.sample_rate = SAMPLE_RATE
            for packet in stream.encode(frame):
                box.mux(packet)
        for packet in stream.encode(None):
            box.mux(packet)
    data = bytearray(out.getvalue())
    # STREAMINFO's total-samples field (36 bits at byte 8+13.5 of the fLaC stream) set to 0:
    # "unknown", as a streamed encoder writes it, so only decoding tells the length.
    info = 8 + 10  # "fLaC" + block header, then min/max block, min/max frame size
    data[info + 3] &= 0xF0
    data[info + 4 : info + 8] = b"\x00\x00\x00\x00"
    return bytes(data)
