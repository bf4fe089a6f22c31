"""Both voice activity detectors find the same speech; silero is the fast CPU default."""

from __future__ import annotations

from serve_app.audio import decode, merge_into_chunks
from serve_app.preprocess import AudioPreprocessor
from serve_app.settings import Settings
from serve_app.vad import PyannoteVad, SileroVad
from tests.speech import audio


def covered(regions):
    return sum(end - start for start, end in regions)


def test_silero_and_pyannote_agree_on_the_long_file():
    samples = decode(audio("harvard_long.flac"))
    silero = SileroVad().speech(samples)
    pyannote = PyannoteVad().speech(samples)
    assert silero and pyannote
    # Both cover most of the 75 s of speech and agree within a few seconds.
    assert covered(silero) > 55 and covered(pyannote) > 55
    assert abs(covered(silero) - covered(pyannote)) < 12
    for regions in (silero, pyannote):
        assert all(c.duration <= 30 for c in merge_into_chunks(regions))


def test_default_vad_is_silero_and_pyannote_is_selectable():
    assert Settings().vad_method == "silero"
    prepared = AudioPreprocessor("pyannote").prepare(audio("harvard_02.wav"))
    assert len(prepared.chunks) == 1 and prepared.chunks[0].duration > 3
