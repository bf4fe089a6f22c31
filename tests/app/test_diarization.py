"""Speaker diarization from bundled weights, measured on conversations among distinct voices.

The conversations are built here (testkit/conversations.py): Piper's voice and espeak-ng
voices taking turns with pauses, short replies and noise, with the exact truth of who spoke
when. Diarization error rate is pyannote.metrics' (collar 0.25 s).
"""

from __future__ import annotations

import base64

import httpx
import openai
import pytest

from serve_app.api import create_app
from serve_app.audio.decode import decode
from serve_app.core.settings import Settings
from serve_app.diarization.clustering import diarize, match_known
from serve_app.diarization.encoder import SpeakerEncoder
from serve_app.diarization.speakers import SpeakerTurn, Windows
from serve_app.transcription.assembly import Assembly
from serve_app.transcription.request import TranscriptionRequest
from serve_app.transcription.service import TranscriptionService
from testkit import conversations
from testkit.cache import folder

conversations.require_espeak()


@pytest.fixture(scope="module")
def talks():
    return conversations.test_set(folder())


@pytest.fixture(scope="module")
def encoder():
    return SpeakerEncoder()


@pytest.fixture(scope="module")
def found(talks, encoder):
    """Each conversation's windows, and its diarization with the number of speakers not given."""
    out = []
    for talk in talks:
        windows = encoder.embed(decode(talk.path.read_bytes()))
        out.append((talk, windows, diarize(windows)))
    return out


def test_error_rate_within_targets(found):
    from pyannote.metrics.diarization import DiarizationErrorRate

    targets = {2: 0.10, 3: 0.15}
    for count, target in targets.items():
        metric = DiarizationErrorRate(collar=0.25)
        for talk, _, result in found:
            if len(talk.speakers) == count:
                metric(conversations.reference(talk), conversations.hypothesis(result.turns))
        assert abs(metric) <= target, f"{count} speakers: DER {abs(metric):.3f} > {target}"


def test_number_of_speakers_found_on_most(found):
    right = sum(len(result.speakers) == len(talk.speakers) for talk, _, result in found)
    assert right >= 0.7 * len(found), [(len(t.speakers), len(r.speakers)) for t, _, r in found]


def test_speaker_bounds_are_kept(found):
    talk, windows, _ = next(f for f in found if len(f[0].speakers) == 3)
    assert len(diarize(windows, max_speakers=2).speakers) == 2
    assert len(diarize(windows, min_speakers=4, max_speakers=4).speakers) == 4
    assert diarize(Windows()).turns == []


@pytest.fixture(scope="module")
def backend(backend_for):
    return backend_for()


async def test_words_carry_their_speaker_and_segments_never_mix(talks, backend, catalog):
    from pyannote.metrics.diarization import DiarizationErrorRate

    asked = TranscriptionRequest.parse(model="tiny.en", diarize=True, timestamps=True)
    resolved = asked.resolve(catalog.get("tiny.en"), default_beam_size=5)
    right = total = 0
    for talk in talks[:3]:
        transcript = await Assembly().collect(
            backend.transcribe(talk.path.read_bytes(), "tiny.en", resolved.decode, resolved.prepare, resolved.diarize)
        )
        for segment in transcript.segments:
            assert segment.speaker is not None
            assert {w.speaker for w in segment.words} == {segment.speaker}, segment
        assert sorted(s["speaker"] for s in transcript.speakers) == sorted({s.speaker for s in transcript.segments})
        turns = [SpeakerTurn(s.start, s.end, s.speaker) for s in transcript.segments]
        mapping = DiarizationErrorRate().optimal_mapping(conversations.reference(talk), conversations.hypothesis(turns))
        r, t = conversations.word_accuracy(talk, transcript.words, mapping)
        right, total = right + r, total + t
    assert right / total >= 0.9, f"{right} of {total} words with their speaker"


def test_known_speakers_are_named(talks, encoder, found):
    talk, _, result = found[0]
    synth = conversations.Voices()
    # The references say other sentences than the conversation does.
    known = {v: encoder.voice(synth.say(v, "A large size in stockings is hard to sell.")) for v in talk.speakers}
    renamed = result.renamed(match_known(result, known))
    assert set(renamed.speakers) == set(talk.speakers)
    # Each name is on the right person: most of each named turn is that person speaking.
    spoken = sum(t.end - t.start for t in renamed.turns)
    right = sum(t.end - t.start for t in renamed.turns if talk.speaker_at((t.start + t.end) / 2) == t.speaker)
    assert right >= 0.9 * spoken


# -- the API, in-process --------------------------------------------------------------------


def sdk_for(app) -> openai.AsyncOpenAI:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost", timeout=300)
    return openai.AsyncOpenAI(api_key="sk-anything", base_url="http://localhost/v1", http_client=http, max_retries=0)


@pytest.fixture(scope="module")
def app(catalog, backend):
    settings = Settings()
    return create_app(TranscriptionService(settings, catalog, backend))


def data_url(samples) -> str:
    import io
    import wave

    import numpy as np

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return "data:audio/wav;base64," + base64.b64encode(buf.getvalue()).decode()


async def test_openai_sdk_gets_diarized_json_with_known_names(app, talks):
    talk = talks[0]
    synth = conversations.Voices()
    refs = {v: synth.say(v, "The source of the huge river is the clear spring. Kick the ball.") for v in talk.speakers}
    names = {v: f"Person {chr(65 + i)} {v}" for i, v in enumerate(talk.speakers)}
    result = await sdk_for(app).audio.transcriptions.create(
        file=("talk.wav", talk.path.read_bytes()),
        model="tiny.en",
        response_format="diarized_json",
        known_speaker_names=[names[v] for v in talk.speakers],
        known_speaker_references=[data_url(refs[v]) for v in talk.speakers],
    )
    assert isinstance(result, openai.types.audio.TranscriptionDiarized)
    assert result.segments and all(s.type == "transcript.text.segment" for s in result.segments)
    said = {}
    for segment in result.segments:
        truth = talk.speaker_at((segment.start + segment.end) / 2)
        if truth is not None:
            said.setdefault(segment.speaker, []).append(names[truth])
    # Every name came back, on the segments of the person it names.
    assert set(said) == set(names.values())
    for speaker, truths in said.items():
        assert truths.count(speaker) >= 0.8 * len(truths), (speaker, truths)

    plain = await sdk_for(app).audio.transcriptions.create(
        file=("talk.wav", talk.path.read_bytes()), model="tiny.en", response_format="diarized_json"
    )
    assert {s.speaker for s in plain.segments} == {"A", "B"}


async def test_rest_diarize_renders_speakers_in_every_format(app, talks):
    talk = talks[0]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://localhost", timeout=300
    ) as http:
        body = {"model": "tiny.en", "diarize": "true", "min_speakers": "2", "max_speakers": "2"}
        files = {"file": ("talk.wav", talk.path.read_bytes())}
        result = (await http.post("/api/v1/transcriptions", data=body, files=files)).json()
        assert [s["speaker"] for s in result["speakers"]] == ["SPEAKER_00", "SPEAKER_01"]
        assert all(s["speaker"] for s in result["segments"])
        assert all(w["speaker"] == s["speaker"] for s in result["segments"] for w in s["words"])
        for fmt, mark in [
            ("srt", "[SPEAKER_0"),
            ("vtt", "<v SPEAKER_0"),
            ("text", "[SPEAKER_0"),
            ("tsv", "\tSPEAKER_0"),
        ]:
            text = (await http.post("/api/v1/transcriptions", data=body | {"response_format": fmt}, files=files)).text
            assert text.count(mark) >= len(talk.turns) // 2, (fmt, text[:300])
        models = (await http.get("/api/v1/models")).json()["models"]
        assert models and all(m["diarization"] for m in models)


@pytest.mark.parametrize(
    "fields, param",
    [
        ({"min_speakers": "2"}, "min_speakers"),
        ({"diarize": "true", "min_speakers": "3", "max_speakers": "2"}, None),
        ({"diarize": "true", "max_speakers": "0"}, "max_speakers"),
        ({"diarize": "true", "max_speakers": "99"}, "max_speakers"),
    ],
)
async def test_bad_speaker_options_are_4xx(app, fields, param):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as http:
        files = {"file": ("a.wav", b"RIFF")}
        response = await http.post("/api/v1/transcriptions", data={"model": "tiny.en"} | fields, files=files)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert "speaker" in error["message"]


@pytest.mark.parametrize(
    "names, refs, says",
    [
        (["ann"], [], "one reference per name"),
        (["ann"], ["https://example.com/a.wav"], "data URL"),
        (["ann"], ["data:audio/wav;base64,!!!"], "base64"),
        (["ann"], ["data:audio/wav;base64," + base64.b64encode(b"not audio").decode()], "ann"),
        (["a\x00b"], ["data:audio/wav;base64,AAAA"], "printable"),
        ([f"p{i}" for i in range(5)], ["data:audio/wav;base64,AAAA"] * 5, "At most 4"),
    ],
)
async def test_bad_known_speakers_are_400(app, talks, names, refs, says):
    with pytest.raises(openai.BadRequestError) as caught:
        await sdk_for(app).audio.transcriptions.create(
            file=("talk.wav", talks[0].path.read_bytes()),
            model="tiny.en",
            response_format="diarized_json",
            known_speaker_names=names,
            known_speaker_references=refs,
        )
    assert says in caught.value.message


async def test_too_short_reference_is_refused(app, talks):
    short = conversations.Voices().say("piper", "Yes.")
    with pytest.raises(openai.BadRequestError, match="2-10 s"):
        await sdk_for(app).audio.transcriptions.create(
            file=("talk.wav", talks[0].path.read_bytes()),
            model="tiny.en",
            response_format="diarized_json",
            known_speaker_names=["ann"],
            known_speaker_references=[data_url(short)],
        )


async def test_diarization_off_is_a_clear_400(catalog, backend):
    app = create_app(TranscriptionService(Settings(diarization=False), catalog, backend))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as http:
        files = {"file": ("a.wav", b"RIFF")}
        response = await http.post("/api/v1/transcriptions", data={"model": "tiny.en", "diarize": "true"}, files=files)
        models = (await http.get("/api/v1/models")).json()
    assert response.status_code == 400 and response.json()["error"]["code"] == "diarization_unavailable"
    assert not any(m["diarization"] for m in models["models"])
