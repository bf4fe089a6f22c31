"""The OpenAI-compatible API of the real Ray Serve application, driven by the official
``openai`` SDK (sync and streaming), on the real models and real speech.

Also: word timestamps against ground truth, language detection and translation of German,
Spanish and French speech (espeak-ng), and the same options on the REST API.
"""

from __future__ import annotations

import io
import json
import re

import openai
import pytest
import srt
import webvtt
from openai.types.audio import Transcription, TranscriptionVerbose

from testkit.speech import DATA, audio, normalize, transcripts, wer

FOREIGN = json.loads((DATA / "foreign.json").read_text())
LANGUAGE_NAMES = {"de": "german", "es": "spanish", "fr": "french"}


@pytest.fixture(scope="module")
def sdk(service) -> openai.OpenAI:
    return openai.OpenAI(base_url=service.url + "/v1", api_key=service.key, timeout=300, max_retries=0)


def upload(name: str) -> tuple[str, bytes]:
    return (name, audio(name))


def test_json_and_text(sdk):
    result = sdk.audio.transcriptions.create(file=upload("harvard_06.wav"), model="whisper-1")
    assert isinstance(result, Transcription)
    assert wer(transcripts()["harvard_06.wav"], result.text) < 20
    assert result.usage.seconds == pytest.approx(4.5, abs=0.5)
    text = sdk.audio.transcriptions.create(file=upload("harvard_06.wav"), model="tiny.en", response_format="text")
    assert isinstance(text, str) and normalize(text) == normalize(result.text)


@pytest.mark.parametrize("response_format", ["srt", "vtt"])
def test_subtitles_parse_with_real_parsers(sdk, response_format):
    body = sdk.audio.transcriptions.create(
        file=upload("harvard_long.flac"), model="tiny.en", response_format=response_format
    )
    if response_format == "srt":
        cues = [(c.start.total_seconds(), c.end.total_seconds(), c.content) for c in srt.parse(body)]
    else:
        cues = [(c.start_in_seconds, c.end_in_seconds, c.text) for c in webvtt.from_buffer(io.StringIO(body))]
    # Sentence cues (cut at word times), not 30 s chunks: the long file has 24 sentences.
    assert len(cues) >= 15, cues
    assert all(0 <= start < end <= 76 for start, end, _ in cues)
    assert all(a[1] <= b[0] + 0.01 for a, b in zip(cues, cues[1:]))  # in order, no overlap
    assert wer(transcripts()["harvard_long.flac"], " ".join(c[2] for c in cues)) < 15


@pytest.mark.parametrize("granularities", [None, ["segment"], ["word"], ["word", "segment"]])
def test_verbose_json_validates_against_the_sdk_types(sdk, granularities):
    extra = {"timestamp_granularities": granularities} if granularities else {}
    raw = sdk.audio.transcriptions.with_raw_response.create(
        file=upload("harvard_02.wav"), model="tiny.en", response_format="verbose_json", **extra
    )
    body = json.loads(raw.text)
    result = TranscriptionVerbose.model_validate(body)
    assert result.language == "english" and result.duration == pytest.approx(4.2, abs=0.5)
    assert wer(transcripts()["harvard_02.wav"], result.text) < 20
    wanted = set(granularities or ["segment"])
    assert ("segments" in body) == ("segment" in wanted) and ("words" in body) == ("word" in wanted)
    if "segment" in wanted:
        assert len(result.segments) == 2  # two sentences
        for s in result.segments:
            assert s.start < s.end and s.tokens and s.avg_logprob < 0 and 0 <= s.no_speech_prob <= 1
    if "word" in wanted:
        words = [w.word for w in result.words]
        assert len(words) >= 15 and all(a.start <= b.start for a, b in zip(result.words, result.words[1:]))
        assert body["word_timestamps"] == "whisper" and "no WhisperX alignment model" in body["alignment_note"]


def test_streaming_sends_deltas_then_done(sdk, service):
    events = list(sdk.audio.transcriptions.create(file=upload("harvard_long.flac"), model="tiny.en", stream=True))
    deltas = [e for e in events if e.type == "transcript.text.delta"]
    assert len(deltas) >= 2 and events[-1].type == "transcript.text.done"
    assert [e.type for e in events[:-1]] == ["transcript.text.delta"] * (len(events) - 1)
    assert "".join(d.delta for d in deltas) == events[-1].text
    assert wer(transcripts()["harvard_long.flac"], events[-1].text) < 15
    with service.client() as client:  # recorded as a job, like any sync request
        [job] = client.get("/api/v1/transcriptions", params={"limit": 1}).json()["items"]
        assert job["filename"] == "harvard_long.flac" and job["status"] == "COMPLETED" and job["sync"]
        assert client.get(f"/api/v1/transcriptions/{job['id']}").json()["result"]["text"] == events[-1].text


def test_streaming_bad_audio_is_a_400_before_any_event(sdk):
    with pytest.raises(openai.BadRequestError) as caught:
        list(sdk.audio.transcriptions.create(file=("x.wav", b"RIFF not really"), model="tiny.en", stream=True))
    assert caught.value.body["code"] in ("invalid_audio", "truncated_audio")


def test_word_times_match_the_ground_truth(sdk):
    """Separately synthesized words joined by known silences: each start within 0.25 s."""
    truth = json.loads((DATA / "words_timed.json").read_text())
    result = sdk.audio.transcriptions.create(
        file=upload("words_timed.wav"),
        model="base",
        language="en",
        response_format="verbose_json",
        timestamp_granularities=["word"],
    )
    heard = [(normalize(w.word), w.start) for w in result.words]
    matched = 0
    for expected in truth:
        # the word heard nearest in time to where it was put; it must be that word (or close)
        word, start = min(heard, key=lambda h: abs(h[1] - expected["start"]))
        assert abs(start - expected["start"]) <= 0.25, (expected, heard)
        matched += word == expected["word"]
    assert matched >= len(truth) - 3, heard  # base mishears one or two isolated words
    assert len(heard) == len(truth), heard


@pytest.mark.parametrize("language", sorted(LANGUAGE_NAMES))
def test_language_detection(sdk, language):
    name = f"speech_{language}.wav"
    result = sdk.audio.transcriptions.create(file=upload(name), model="base", response_format="verbose_json")
    assert result.language == LANGUAGE_NAMES[language]
    assert result.model_extra["language_probability"] > 0.5


# Words that mark each source language, and English words the translations should use.
SOURCE_WORDS = {
    "de": {"und", "wir", "ist", "heute"},
    "es": {"y", "vamos", "hoy", "muy"},
    "fr": {"nous", "avec", "et", "nos"},
}
ENGLISH = {"good", "morning", "day", "today", "weather", "park", "friends", "restaurant", "evening", "night"}


@pytest.mark.parametrize("language", sorted(LANGUAGE_NAMES))
def test_translation_comes_back_in_english(sdk, language):
    result = sdk.audio.translations.create(file=upload(f"speech_{language}.wav"), model="base")
    words = set(normalize(result.text).split())
    assert len(words & ENGLISH) >= 2 and not words & SOURCE_WORDS[language], result.text


def test_translation_verbose_json_says_task_and_source_language(sdk):
    raw = sdk.audio.translations.with_raw_response.create(
        file=upload("speech_es.wav"), model="base", response_format="verbose_json"
    )
    body = json.loads(raw.text)
    assert body["task"] == "translate" and body["language"] == "spanish" and body["segments"]


def test_english_only_model_refuses_translation_and_other_languages(sdk, service):
    with pytest.raises(openai.BadRequestError):
        sdk.audio.translations.create(file=upload("speech_de.wav"), model="tiny.en")
    with pytest.raises(openai.BadRequestError):
        sdk.audio.transcriptions.create(file=upload("speech_de.wav"), model="tiny.en", language="de")
    with service.client() as client:
        r = client.post(
            "/api/v1/transcriptions",
            files={"file": upload("speech_de.wav")},
            data={"model": "tiny.en", "task": "translate"},
        )
        assert r.status_code == 400 and r.json()["error"]["code"] == "unsupported_task"


def test_rest_api_has_the_same_options(service):
    with service.client() as client:
        r = client.post(
            "/api/v1/transcriptions",
            files={"file": upload("speech_fr.wav")},
            data={"model": "base", "word_timestamps": "true", "timestamps": "true", "temperature": "0"},
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["language"] == "fr" and body["language_probability"] > 0.5
        assert body["word_timestamps"] == "whisper" and body["alignment_note"]
        assert len(body["segments"]) >= 2 and all(s["words"] for s in body["segments"])
        r = client.post(
            "/api/v1/transcriptions",
            files={"file": upload("speech_de.wav")},
            data={"model": "base", "task": "translate", "prompt": "Good morning."},
        )
        assert r.status_code == 200 and r.json()["task"] == "translate"
        assert re.search(r"\b(good|morning|today|park)\b", r.json()["text"].lower())
        r = client.post("/api/v1/transcriptions", files={"file": upload("harvard_01.wav")}, data={"temperature": "1.5"})
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_parameter"


def test_python_handle_takes_the_options(service):
    result = service.handle.transcribe.remote(audio("harvard_04.wav"), word_timestamps=True).result()
    assert result.word_timestamps == "whisper" and len(result.words) >= 14
    assert wer(transcripts()["harvard_04.wav"], result.text) < 20
