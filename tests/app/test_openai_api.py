"""The OpenAI-compatible routes in-process (no Ray), driven by the official ``openai`` SDK.

The SDK talks to the FastAPI app through httpx's ASGI transport; the backend is LocalBackend,
the library code the deployments run. The Ray service is driven the same way in
tests/serve/test_openai.py.
"""

from __future__ import annotations

import httpx
import openai
import pytest

from serve_app.api import create_app
from serve_app.core.settings import Settings
from serve_app.transcription.service import TranscriptionService
from testkit.speech import audio, transcripts, wer


def sdk_for(app, api_key: str = "sk-anything") -> openai.AsyncOpenAI:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost")
    return openai.AsyncOpenAI(api_key=api_key, base_url="http://localhost/v1", http_client=http, max_retries=0)


@pytest.fixture(scope="module")
def app(catalog, backend_for):
    settings = Settings(max_upload_mb=1)
    return create_app(TranscriptionService(settings, catalog, backend_for(settings)))


@pytest.fixture(scope="module")
def sdk(app):
    return sdk_for(app)


async def test_json_through_the_sdk(sdk):
    result = await sdk.audio.transcriptions.create(file=("a.wav", audio("harvard_01.wav")), model="whisper-1")
    assert isinstance(result, openai.types.audio.Transcription)
    assert wer(transcripts()["harvard_01.wav"], result.text) < 25
    sampled = await sdk.audio.transcriptions.create(
        file=("a.wav", audio("harvard_01.wav")), model="whisper-1", temperature=0.4, response_format="verbose_json"
    )
    assert wer(transcripts()["harvard_01.wav"], sampled.text) < 40 and sampled.segments[0].temperature == 0.4


@pytest.mark.parametrize(
    "kwargs, error, code, param",
    [
        ({"model": "whisper-2"}, openai.NotFoundError, "model_not_found", "model"),
        ({"model": "tiny.en", "language": "de"}, openai.BadRequestError, "unsupported_language", "language"),
        ({"model": "base", "language": "xx"}, openai.BadRequestError, "unsupported_language", "language"),
        (
            {"model": "whisper-1", "response_format": "xml"},
            openai.BadRequestError,
            "invalid_parameter",
            "response_format",
        ),
        (
            {"model": "whisper-1", "timestamp_granularities": ["word"]},
            openai.BadRequestError,
            "invalid_parameter",
            "timestamp_granularities",
        ),
        (
            {"model": "whisper-1", "response_format": "verbose_json", "timestamp_granularities": ["letter"]},
            openai.BadRequestError,
            "invalid_parameter",
            "timestamp_granularities",
        ),
        ({"model": "whisper-1", "temperature": 3}, openai.BadRequestError, "invalid_parameter", "temperature"),
        ({"model": "whisper-1", "prompt": "x" * 900}, openai.BadRequestError, "invalid_parameter", "prompt"),
    ],
)
async def test_bad_parameters_get_openai_errors(sdk, kwargs, error, code, param):
    with pytest.raises(error) as caught:
        await sdk.audio.transcriptions.create(file=("a.wav", audio("harvard_01.wav")), **kwargs)
    body = caught.value.body
    assert body["code"] == code and body["param"] == param and body["type"] == "invalid_request_error"
    assert body["message"]


@pytest.mark.parametrize(
    "upload, code",
    [
        (("a.wav", b""), "empty_file"),
        (("a.mp3", b"this is not audio, just text " * 20), "invalid_audio"),
        (("cut.wav", audio("harvard_02.wav")[:30000]), "truncated_audio"),
    ],
)
async def test_bad_audio_gets_a_400(sdk, upload, code):
    with pytest.raises(openai.BadRequestError) as caught:
        await sdk.audio.transcriptions.create(file=upload, model="whisper-1")
    assert caught.value.body["code"] == code


async def test_huge_upload_is_refused_before_reading(sdk):
    with pytest.raises(openai.APIStatusError) as caught:
        await sdk.audio.transcriptions.create(file=("big.wav", b"\0" * (2 * 2**20)), model="whisper-1")
    assert caught.value.status_code == 413 and caught.value.body["code"] == "payload_too_large"


async def test_english_only_model_refuses_translation(sdk):
    # whisper-1 is the default model, tiny.en here: it cannot translate.
    with pytest.raises(openai.BadRequestError) as caught:
        await sdk.audio.translations.create(file=("a.wav", audio("harvard_01.wav")), model="whisper-1")
    assert caught.value.body["code"] == "unsupported_task"


async def test_models_list(sdk):
    ids = [m.id async for m in sdk.models.list()]
    assert ids == ["tiny.en", "base", "whisper-1"]


async def test_api_key_is_checked_when_configured(catalog, backend_for):
    settings = Settings(api_key="sk-right")
    app = create_app(TranscriptionService(settings, catalog, backend_for(settings)))
    with pytest.raises(openai.AuthenticationError) as caught:
        await sdk_for(app, "sk-wrong").audio.transcriptions.create(
            file=("a.wav", audio("harvard_01.wav")), model="whisper-1"
        )
    assert caught.value.body["code"] == "invalid_api_key"
    result = await sdk_for(app, "sk-right").audio.transcriptions.create(
        file=("a.wav", audio("harvard_01.wav")), model="whisper-1", response_format="text"
    )
    assert "birch" in result.lower()

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as http:
        assert (await http.get("/api/v1/health")).status_code == 200  # probes need no key
        refused = await http.get("/api/v1/transcriptions")
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
        ok = await http.get("/api/v1/models", headers={"X-API-Key": "sk-right"})
        assert ok.status_code == 200


async def test_a_stream_is_logged_with_the_whole_recordings_length(catalog, backend_for, caplog):
    """The access line of a streamed request is written when the stream ends, with the audio of
    the whole recording (it once said the first piece's), and the deltas make up the text."""
    import json
    import logging

    from testkit.recordings import long_recording

    recording, text, seconds = long_recording(75)  # three pieces of speech
    sdk = sdk_for(create_app(TranscriptionService(Settings(), catalog, backend_for())))
    caplog.set_level(logging.INFO, logger="speechtotext.access")
    stream = await sdk.audio.transcriptions.create(file=("talk.mp3", recording), model="whisper-1", stream=True)
    events = [event async for event in stream]
    assert [e.type for e in events].count("transcript.text.delta") >= 3
    assert wer(text, events[-1].text) < 20
    [line] = [json.loads(r.message) for r in caplog.records if r.name == "speechtotext.access"]
    assert line["route"] == "/v1/audio/transcriptions" and line["status"] == 200
    assert abs(line["audio_seconds"] - seconds) < 1.0, (line["audio_seconds"], seconds)


class LosesItsReplica:
    """A backend whose model replica goes away after the first part: it raises what RayBackend
    raises then (ModelUnavailable, 503). Failure injected here; the rest is the real backend."""

    def __init__(self, real):
        self.real = real

    async def transcribe(self, *args):
        from serve_app.core.errors import ModelUnavailable

        async for item in self.real.transcribe(*args):
            yield item
            raise ModelUnavailable("The replica working on this request went away; retry in a few seconds.")

    def unavailable(self):
        return set()

    async def not_ready(self):
        return []

    async def available(self, model):
        return True

    def problems(self):
        return []


async def test_an_error_mid_stream_keeps_its_kind(catalog, backend_for):
    """A 503 after the status line went out reaches the SDK as a server_error, not as a mistake
    of the request's."""
    from testkit.recordings import long_recording

    recording, _, _ = long_recording(75)
    sdk = sdk_for(create_app(TranscriptionService(Settings(), catalog, LosesItsReplica(backend_for()))))
    stream = await sdk.audio.transcriptions.create(file=("talk.mp3", recording), model="whisper-1", stream=True)
    with pytest.raises(openai.APIError) as caught:
        async for _ in stream:
            pass
    assert caught.value.body["type"] == "server_error" and caught.value.body["code"] == "model_unavailable"
