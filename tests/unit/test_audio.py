"""Decoding and chunking of real audio, and the errors bad uploads get."""

from __future__ import annotations

import io
import wave

import av
import numpy as np
import pytest

from serve_app.audio.chunking import merge_regions
from serve_app.audio.decode import decode
from serve_app.audio.levels import level_regions, normalize
from serve_app.audio.pieces import SAMPLE_RATE
from serve_app.core.errors import InvalidAudio, UnsupportedMediaType
from testkit.speech import audio


def test_decodes_wav_and_flac_to_16k_mono():
    meta = {"harvard_01.wav": 4.54, "harvard_long.flac": 75.21}
    for name, seconds in meta.items():
        samples = decode(audio(name))
        assert samples.dtype == np.float32
        assert samples.ndim == 1
        assert abs(samples.size / SAMPLE_RATE - seconds) < 0.05


def _encode(samples: np.ndarray, fmt: str, codec: str, rate: int = 16000, layout="stereo") -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        pcm = np.tile(samples, (2, 1)) if layout == "stereo" else samples[None]
        frame = av.AudioFrame.from_ndarray(pcm.astype(np.float32), format="fltp", layout=layout)
        frame.sample_rate = rate
        for p in stream.encode(frame):
            out.mux(p)
        for p in stream.encode(None):
            out.mux(p)
    return buf.getvalue()


def test_decodes_compressed_stereo_at_other_rates():
    speech = decode(audio("harvard_02.wav"))
    for fmt, codec, rate in [("mp3", "libmp3lame", 44100), ("ogg", "libopus", 48000), ("adts", "aac", 22050)]:
        resampled = np.interp(
            np.arange(int(speech.size * rate / SAMPLE_RATE)) * SAMPLE_RATE / rate,
            np.arange(speech.size),
            speech,
        ).astype(np.float32)
        samples = decode(_encode(resampled, fmt, codec, rate=rate))
        assert abs(samples.size - speech.size) < SAMPLE_RATE * 0.2, fmt


@pytest.mark.parametrize(
    "data, code",
    [
        (b"", "invalid_audio"),  # the upload reader names it empty_file first
        (b"this is a text file, not a recording" * 20, "invalid_audio"),
        (b"\x00" * 4096, "invalid_audio"),
    ],
)
def test_bad_uploads_raise_clear_errors(data, code):
    with pytest.raises(InvalidAudio) as err:
        decode(data)
    assert err.value.code == code
    assert err.value.status_code == 400


def test_truncated_wav_and_flac_are_refused():
    wav = audio("harvard_01.wav")
    with pytest.raises(InvalidAudio) as err:
        decode(wav[: len(wav) // 3])
    assert err.value.code == "truncated_audio"
    flac = audio("harvard_long.flac")
    with pytest.raises(InvalidAudio):
        decode(flac[: len(flac) // 4])


def test_streamed_wav_without_length_is_accepted():
    pcm = (decode(audio("harvard_01.wav")) * 32767).astype(np.int16)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes(pcm.tobytes())
    data = bytearray(buf.getvalue())
    data[40:44] = (0xFFFFFFFF).to_bytes(4, "little")  # what a streaming writer leaves
    assert decode(bytes(data)).size == pcm.size


def test_video_without_audio_is_unsupported():
    buf = io.BytesIO()
    with av.open(buf, "w", format="matroska") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height = 32, 32
        for _ in range(5):
            frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            for p in stream.encode(frame):
                out.mux(p)
        for p in stream.encode(None):
            out.mux(p)
    with pytest.raises(UnsupportedMediaType):
        decode(buf.getvalue())


def test_audio_over_the_length_limit_is_refused():
    with pytest.raises(InvalidAudio) as err:
        decode(audio("harvard_long.flac"), max_seconds=30)
    assert err.value.code == "audio_too_long"


def test_merge_into_chunks_keeps_chunks_under_30s():
    speech = [(i * 7.0, i * 7.0 + 6.0) for i in range(10)]
    chunks = merge_regions(speech)
    assert all(c.duration <= 30.0 for c in chunks)
    assert chunks[0].start == 0.0 and chunks[-1].end == 69.0
    assert merge_regions([]) == []


def test_normalize_scales_quiet_audio():
    quiet = decode(audio("harvard_01.wav")) * 0.01
    loud = normalize(quiet)
    assert abs(float(np.abs(loud).max()) - 0.95) < 1e-3
    silence = np.zeros(16000, np.float32)
    assert normalize(silence) is silence


def silent_flac(seconds: float, rate: int = 1000) -> bytes:
    """Digital silence as FLAC whose STREAMINFO does not state its length (total samples 0)."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="flac") as out:
        stream = out.add_stream("flac", rate=rate, layout="mono")
        stream.codec_context.format = "s16"
        block = np.zeros((1, rate * 10), np.int16)
        for i in range(int(seconds / 10)):
            frame = av.AudioFrame.from_ndarray(block, format="s16", layout="mono")
            frame.sample_rate, frame.pts = rate, i * rate * 10
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    data = bytearray(buf.getvalue())
    data[21] &= 0xF0  # the 36-bit total-samples field of STREAMINFO: "unknown"
    data[22:26] = b"\0\0\0\0"
    return bytes(data)


def test_a_decompression_bomb_is_stopped_while_it_decodes():
    from serve_app.audio.decode import plausible_seconds

    bomb = silent_flac(1800)  # 30 min of silence in ~130 KB, saying nothing of its length
    with pytest.raises(InvalidAudio) as caught:
        decode(bomb, max_seconds=4 * 3600)
    assert caught.value.code == "implausible_audio" and "decompression bomb" in caught.value.message
    assert plausible_seconds(len(bomb)) < 1800
    assert decode(silent_flac(20)).size == 20 * 16000  # short silence is still audio


async def test_the_decode_budget_makes_uploads_wait_and_one_always_fits():
    import asyncio

    from serve_app.audio.preprocess import DecodeBudget

    budget = DecodeBudget(seconds=100, max_audio_seconds=60)
    order = []

    async def upload(name, size, hold_s):
        async with budget.hold(size) as cost:
            order.append((name, cost, budget.reserved))
            await asyncio.sleep(hold_s)

    # 60 s each (capped at the longest audio): the second waits for the first.
    await asyncio.gather(upload("a", 10_000_000, 0.2), upload("b", 10_000_000, 0.0), upload("c", 1000, 0.0))
    assert order[0] == ("a", 60, 60) and ("c", 30, 90) in order and order[-1][0] == "b"
    assert budget.reserved == 0
    assert DecodeBudget(seconds=10, max_audio_seconds=60).seconds == 60


def test_each_speech_region_is_brought_to_full_level_on_its_own():
    """A soft talker after a loud one (30 dB down) reaches the loud one's level; the gap
    between them ramps; a single region is a plain normalisation."""
    rate = 16000
    t = np.arange(rate) / rate
    loud, soft = 0.8 * np.sin(2 * np.pi * 200 * t), 0.025 * np.sin(2 * np.pi * 200 * t)
    samples = np.concatenate([loud, np.zeros(rate // 2), soft]).astype(np.float32)
    levelled = level_regions(samples, [(0.0, 1.0), (1.5, 2.5)])
    assert abs(np.abs(levelled[:rate]).max() - 0.95) < 0.01
    assert abs(np.abs(levelled[-rate:]).max() - 0.95) < 0.02
    assert np.abs(levelled).max() <= 1.0
    assert np.allclose(level_regions(samples, [(0.0, 2.5)]), normalize(samples))
    quieter = level_regions(samples, [(0.0, 1.0), (1.5, 2.5)], max_gain_db=10)  # capped
    assert np.abs(quieter[-rate:]).max() < 0.025 * 0.95 / 0.8 * 10 ** (10 / 20) + 1e-3
