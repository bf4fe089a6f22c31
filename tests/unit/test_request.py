"""One validation of a request's options for every entry point, and the one upload reader."""

from __future__ import annotations

import pytest

from serve_app.audio.uploads import AudioUpload, clean_filename
from serve_app.core.errors import InvalidAudio, InvalidParameter, PayloadTooLarge, UnsupportedLanguage
from serve_app.transcription.request import Resolved, TranscriptionRequest


@pytest.mark.parametrize(
    "fields, param",
    [
        ({"beam_size": 50}, "beam_size"),
        ({"beam_size": 0}, "beam_size"),
        ({"temperature": 1.5}, "temperature"),
        ({"prompt": "x" * 801}, "prompt"),
        ({"task": "summarize"}, "task"),
        ({"language": "x" * 40}, "language"),
        ({"beam_sise": 5}, "beam_sise"),
        ({"word_timestamps": "perhaps"}, "word_timestamps"),
        ({"prompt": "names: Ann\x00Bob"}, "prompt"),
    ],
)
def test_each_mistake_is_one_invalid_parameter_naming_the_field(fields, param):
    with pytest.raises(InvalidParameter) as caught:
        TranscriptionRequest.parse(**fields)
    assert (caught.value.code, caught.value.status_code, caught.value.param) == ("invalid_parameter", 422, param)


def test_blank_fields_are_unset_and_languages_lower_case():
    asked = TranscriptionRequest.parse(model="  ", language=" DE ", prompt="")
    assert (asked.model, asked.language, asked.prompt) == (None, "de", None)
    assert TranscriptionRequest.parse(prompt="Zoë, 東京\nand Łódź").prompt == "Zoë, 東京\nand Łódź"


def test_resolve_checks_against_the_model(catalog):
    tiny, base = catalog.get("tiny.en"), catalog.get("base")
    assert TranscriptionRequest().resolve(tiny, default_beam_size=5).decode.language == "en"  # nothing to detect
    assert TranscriptionRequest().resolve(base, default_beam_size=5).decode.language is None  # detected later
    with pytest.raises(UnsupportedLanguage, match="only transcribes English"):
        TranscriptionRequest(language="fr").resolve(tiny, default_beam_size=5)
    with pytest.raises(UnsupportedLanguage, match="not a Whisper language"):
        TranscriptionRequest(language="xx").resolve(base, default_beam_size=5)
    with pytest.raises(InvalidParameter) as bad:  # no code at all: refused by its shape, naming the field
        TranscriptionRequest.parse(language="e\x00n")
    assert bad.value.param == "language"
    with pytest.raises(InvalidParameter) as caught:
        TranscriptionRequest(task="translate").resolve(tiny, default_beam_size=5)
    assert caught.value.code == "unsupported_task" and caught.value.status_code == 400
    resolved = TranscriptionRequest(beam_size=2, vad=False).resolve(base, default_beam_size=5)
    assert Resolved.of_job("base", resolved.job_spec().options) == resolved  # what a job row keeps


async def test_the_upload_reader_checks_size_and_emptiness_once_for_every_source():
    with pytest.raises(PayloadTooLarge):
        AudioUpload(b"x" * 11, limit_bytes=10)
    with pytest.raises(InvalidAudio) as caught:
        AudioUpload(b"", limit_bytes=10, filename="a.wav")
    assert caught.value.code == "empty_file" and "a.wav" in caught.value.message
    with pytest.raises(InvalidParameter):
        AudioUpload("not bytes", limit_bytes=10)

    class Streamed:  # an upload whose size the client did not state
        filename, size = "s.wav", None

        def __init__(self, data):
            self.data = data

        async def read(self, n=-1):
            block, self.data = self.data[:n], self.data[n:]
            return block

    assert await AudioUpload(Streamed(b"abc"), limit_bytes=10).read() == b"abc"
    with pytest.raises(PayloadTooLarge):
        await AudioUpload(Streamed(b"x" * (3 << 20)), limit_bytes=2 << 20).read()
    with pytest.raises(InvalidAudio):
        await AudioUpload(Streamed(b""), limit_bytes=10).read()


def test_file_names_lose_control_characters():
    assert clean_filename("me\x00eting\n.wav") == "meeting.wav"
    assert clean_filename("\x00\x01") == "audio" and clean_filename(None) == "audio"
    assert clean_filename("ünïcødé 会议.mp3") == "ünïcødé 会议.mp3"
    assert len(clean_filename("a" * 1000)) == 255
