"""Word times: snapping edges out of silence, sentence segments, and the WhisperX path.

The ground-truth check of word times through the service is in tests/serve/test_openai.py.
"""

from __future__ import annotations

import pytest

from serve_app.asr.words import split_sentences
from serve_app.audio.preprocess import PrepareOptions
from serve_app.core.settings import Settings
from serve_app.core.transcript import DecodeOptions, Segment, Word
from serve_app.transcription.backends import LocalBackend
from testkit.speech import audio
from tests.align_model import make_tiny_align_model


def test_chunk_segments_split_into_sentences_at_punctuation_and_pauses(tokenizer):
    words = [
        Word(" The", 0.0, 0.2, 1),
        Word(" end.", 0.2, 0.5, 1),
        Word(" Then", 0.7, 0.9, 1),
        Word(" more", 0.9, 1.1, 1),
        Word(" after", 2.5, 2.8, 1),
        Word(" pause", 2.8, 3.0, 1),
    ]
    segment = Segment(0, 0.0, 3.0, "The end. Then more after pause", -0.2, words=words)
    parts = split_sentences(segment, tokenizer)
    assert [p.text for p in parts] == ["The end.", "Then more", "after pause"]
    assert [(p.start, p.end) for p in parts] == [(0.0, 0.5), (0.7, 1.1), (2.5, 3.0)]
    assert tokenizer.decode(parts[1].tokens).strip() == "Then more"


async def whole(backend, *args):
    from serve_app.transcription.assembly import Assembly

    return await Assembly().collect(backend.transcribe(*args))


@pytest.fixture(scope="module")
def aligned_backend(catalog, tmp_path_factory):
    models = tmp_path_factory.mktemp("align")
    settings = Settings(align_models={"en": str(make_tiny_align_model(models / "en")), "de": str(models / "absent")})
    return LocalBackend(settings, catalog)


async def test_whisperx_alignment_is_used_where_a_model_is_configured(aligned_backend):
    # The alignment model has random weights (tests/align_model.py): this proves the path is
    # taken and its words land inside their segments, not that its times are good.
    result = await whole(
        aligned_backend,
        audio("harvard_03.wav"),
        "tiny.en",
        DecodeOptions(language="en", word_timestamps=True),
        PrepareOptions(),
    )
    assert result.word_timestamps == "whisperx" and result.alignment_note is None
    assert [w.word.lower().strip(".,") for w in result.words][:3] == ["rice", "is", "often"]
    for segment in result.segments:
        for word in segment.words:
            assert segment.start - 0.01 <= word.start <= word.end <= segment.end + 0.01


async def test_alignment_falls_back_to_whisper_and_says_why(aligned_backend):
    german = audio("speech_de.wav")
    result = await whole(aligned_backend, german, "base", DecodeOptions(word_timestamps=True), PrepareOptions())
    assert result.language == "de" and result.word_timestamps == "whisper"
    assert "did not load" in result.alignment_note and len(result.words) > 10
    spanish = audio("speech_es.wav")
    result = await whole(aligned_backend, spanish, "base", DecodeOptions(word_timestamps=True), PrepareOptions())
    assert result.word_timestamps == "whisper" and "no WhisperX alignment model" in result.alignment_note
