"""The Preprocessor's whole path on a real recording: decode, VAD (Silero's model), chunks."""

from __future__ import annotations

from serve_app.audio.preprocess import AudioPreprocessor, PrepareOptions
from testkit.speech import audio, transcripts


def test_preprocessor_finds_speech_in_long_file():
    pre = AudioPreprocessor("silero")
    prepared = pre.prepare(audio("harvard_long.flac"))
    assert len(prepared.chunks) >= 3
    assert all(0 < c.duration <= 30.0 for c in prepared.chunks)
    # The speech the detector found covers most of the recording.
    assert sum(c.duration for c in prepared.chunks) > 0.8 * prepared.duration
    plain = pre.prepare(audio("harvard_long.flac"), PrepareOptions(vad=False, normalize=False))
    assert [round(c.duration) for c in plain.chunks][:2] == [30, 30]
    assert set(transcripts()) >= {"harvard_long.flac"}
