"""Both voice activity detectors find the same speech; silero is the fast CPU default."""

from __future__ import annotations

from serve_app.audio.chunking import merge_regions
from serve_app.audio.decode import decode
from serve_app.audio.preprocess import AudioPreprocessor
from serve_app.audio.vad import PyannoteVad, SileroVad
from serve_app.core.settings import Settings
from testkit.speech import audio


def covered(regions):
    return sum(end - start for start, end in regions)


def test_silero_and_pyannote_agree_on_the_long_file():
    samples = decode(audio("harvard_long.flac"))
    silero = SileroVad().speech(samples)
    pyannote = PyannoteVad().speech(samples)
    assert silero and pyannote
    # Both find the 24 sentences of the 75 s file (silero pads each region by 0.4 s, pyannote
    # cuts tight), and every region one finds overlaps a region of the other.
    assert covered(silero) > 40 and covered(pyannote) > 40
    for a, b in ((silero, pyannote), (pyannote, silero)):
        assert all(any(s < e2 and s2 < e for s2, e2 in b) for s, e in a)
    for regions in (silero, pyannote):
        assert all(c.duration <= 30 for c in merge_regions(regions))


def test_default_vad_is_silero_and_pyannote_is_selectable():
    assert Settings().vad_method == "silero"
    prepared = AudioPreprocessor("pyannote").prepare(audio("harvard_02.wav"))
    assert len(prepared.chunks) == 1 and prepared.chunks[0].duration > 3
