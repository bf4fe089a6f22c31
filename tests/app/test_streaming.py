"""Long recordings in bounded memory, progress and the events stream, decompression bombs,
model=auto; in one process over the real PostgreSQL, BlobStore, models and speech."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest

from serve_app.asr.autoselect import AutoRule, ModelChoice, NoModelFits
from serve_app.asr.catalog import ModelCatalog
from serve_app.audio.chunking import SpeechChunker, merge_regions
from serve_app.audio.decode import decode, plausible_seconds
from serve_app.audio.pieces import SAMPLE_RATE
from serve_app.audio.preprocess import AudioPreprocessor
from serve_app.core.settings import Settings
from testkit.recordings import bomb, long_recording
from testkit.speech import audio, transcripts, wer
from tests.app.test_jobs_flow import wait_done


@pytest.fixture(scope="module")
def five_minutes():
    return long_recording(300, "mp3")  # ten pieces of speech


def test_pieces_of_a_stream_match_the_whole_file_chunks_and_memory_stays_bounded(five_minutes):
    data, _, seconds = five_minutes
    pre = AudioPreprocessor()
    samples = decode(data)
    whole = merge_regions(pre.vad.speech(samples))
    stream = pre.open(data)
    pieces, held = [], []
    while (piece := stream.next_piece()) is not None:
        pieces.append(piece)
        held.append(stream.chunker.held_seconds)
    stream.close()
    assert abs(stream.seconds - seconds) < 0.2
    assert all(p.duration <= 30.0 for p in pieces)
    # The same speech found, cut at nearly the same places (the sliding window hears a little
    # less context at its edges than one pass over the whole file).
    assert abs(len(pieces) - len(whole)) <= 2
    assert abs(sum(p.duration for p in pieces) - sum(c.duration for c in whole)) < 0.02 * seconds
    starts = [p.offset for p in pieces]
    assert starts == sorted(starts) and all(b.offset >= a.offset + a.duration - 0.5 for a, b in zip(pieces, pieces[1:]))
    # What the chunker holds never grows with the recording: about a VAD window and a piece.
    assert max(held) < 100, max(held)


def test_without_vad_a_stream_is_cut_every_30_seconds():
    chunker = SpeechChunker(None, normalize=False)
    out = []
    for _ in range(10):
        out += chunker.feed(np.zeros(SAMPLE_RATE * 10, np.float32))
    out += chunker.finish()
    assert [p.offset for p in out] == [0.0, 30.0, 60.0, 90.0] and out[-1].duration == 10.0


async def test_a_decompression_bomb_is_refused_within_seconds(service):
    client, *_ = service
    data = bomb()
    assert len(data) < 200_000
    warm = await client.post("/api/v1/transcriptions", files={"file": ("a.wav", audio("harvard_01.wav"))})
    assert warm.status_code == 200  # the model is loaded: what follows times the refusal alone
    response = await client.post("/api/v1/transcriptions", files={"file": ("quiet.flac", data)})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    # Stopped at the block that crossed what a file of its size can hold, not after its 6 hours.
    assert error["code"] == "implausible_audio"
    assert f"decodes to more than {plausible_seconds(len(data)):.0f} s" in error["message"], error


async def read_events(client, job_id, *, until=("completed", "failed"), timeout=300):
    events = []
    async with client.stream("GET", f"/api/v1/transcriptions/{job_id}/events", timeout=timeout) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        kind = None
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                events.append((kind, json.loads(line[6:])))
                if kind in until:
                    break
    return events


async def test_a_long_async_job_reports_progress_and_partial_texts_as_it_goes(service, monkeypatch, five_minutes):
    import serve_app.transcription.progress
    import serve_app.transcription.watch

    # Many reports, and a close look at them, within a short test.
    monkeypatch.setattr(serve_app.transcription.progress, "FLUSH_SECONDS", 0.2)
    monkeypatch.setattr(serve_app.transcription.watch, "POLL_SECONDS", 0.1)
    client, store, *_ = service
    data, reference, seconds = five_minutes
    response = await client.post("/api/v1/transcriptions", files={"file": ("talk.mp3", data)}, data={"sync": "false"})
    assert response.status_code == 202
    job_id = response.json()["id"]
    events = await read_events(client, job_id)
    progress = [e["progress"] for kind, e in events if kind == "progress"]
    partial = [e for kind, e in events if kind == "partial"]
    kind, final = events[-1]
    assert kind == "completed", events[-3:]
    assert progress == sorted(progress) and len({p for p in progress if 0 < p < 1}) >= 2, progress
    assert [p["seq"] for p in partial] == list(range(1, len(partial) + 1)) and len(partial) >= 8
    assert wer(reference, final["text"]) < 15 and abs(final["duration"] - seconds) < 0.5
    assert wer(" ".join(p["text"] for p in partial), final["text"]) < 2
    # A client that connects late gets the whole story at once.
    late = await read_events(client, job_id)
    assert [k for k, _ in late].count("partial") == len(partial) and late[-1][0] == "completed"
    # The row's progress moved while the job ran and is 1 now.
    assert (await store.get(uuid.UUID(job_id))).progress == 1


async def test_a_short_sync_job_writes_no_progress_before_it_completes(service, monkeypatch):
    import serve_app.transcription.progress

    # A job that ends within the flush period writes its pieces once, at the end (however long a
    # loaded box takes over this one: the period is made longer than any run of it).
    monkeypatch.setattr(serve_app.transcription.progress, "FLUSH_SECONDS", 600.0)
    client, *_ = service
    done = await client.post("/api/v1/transcriptions", files={"file": ("a.wav", audio("harvard_01.wav"))})
    assert done.status_code == 200
    events = await read_events(client, done.json()["id"])
    assert [k for k, _ in events] == ["progress", "completed"]  # no pieces written: one write, at the end
    assert wer(transcripts()["harvard_01.wav"], events[-1][1]["text"]) < 25


async def test_events_of_a_missing_or_foreign_job_are_404(service):
    client, *_ = service
    assert (await client.get(f"/api/v1/transcriptions/{uuid.uuid4()}/events")).status_code == 404
    assert (await client.get("/api/v1/transcriptions/not-a-uuid/events")).status_code == 404


def choice(quality, task="transcribe", served=(("tiny.en", False), ("base", True))):
    rules = ModelCatalog.load(Settings().catalog_path, Settings().cache_dir).auto
    return ModelChoice(quality, task, served, rules)


def test_each_auto_rule_of_the_catalog_picks_its_model():
    assert choice("speed").pick(60, "en") == "tiny.en"
    assert choice("speed").pick(60, "fr") == "base"  # English-only models for English only
    assert choice("speed", task="translate").pick(60, "en") == "base"
    assert choice("balanced").pick(600, "en") == "base"
    assert choice("balanced").pick(3 * 3600, "en") == "tiny.en"  # hours: the faster model
    assert choice("balanced").pick(None, "en") == "tiny.en"  # length unknown: the rule for any
    assert choice("accuracy").pick(3 * 3600, "en") == "base"
    assert choice("speed").detector() == "base"  # unknown language: base detects it first
    assert choice("accuracy", served=(("tiny.en", False),)).pick(60, "en") == "tiny.en"
    with pytest.raises(NoModelFits):
        choice("speed", served=(("tiny.en", False),)).check("de")
    with pytest.raises(ValueError):
        AutoRule.parse({"quality": "fastest", "models": ["base"]})


async def test_model_auto_through_the_api(service):
    client, *_ = service
    english = audio("harvard_02.wav")
    fast = await client.post(
        "/api/v1/transcriptions", files={"file": ("a.wav", english)}, data={"model": "auto", "quality": "speed"}
    )
    assert fast.status_code == 200 and fast.json()["model"] == "tiny.en"  # detected English
    assert wer(transcripts()["harvard_02.wav"], fast.json()["text"]) < 15
    good = await client.post("/api/v1/transcriptions", files={"file": ("a.wav", english)}, data={"model": "auto"})
    assert good.json()["model"] == "base"  # balanced, short
    german = await client.post(
        "/api/v1/transcriptions",
        files={"file": ("de.wav", audio("speech_de.wav"))},
        data={"model": "auto", "quality": "speed"},
    )
    assert german.json()["model"] == "base" and german.json()["language"] == "de"
    job = await client.post(
        "/api/v1/transcriptions",
        files={"file": ("a.wav", english)},
        data={"model": "auto", "quality": "speed", "sync": "false"},
    )
    body = await wait_done(client, job.json()["id"])
    assert body["status"] == "COMPLETED" and body["model"] == "tiny.en"
    bad = await client.post(
        "/api/v1/transcriptions", files={"file": ("a.wav", english)}, data={"model": "auto", "quality": "best"}
    )
    assert bad.status_code == 422 and "quality" in bad.json()["error"]["message"]
    wrong = await client.post(
        "/api/v1/transcriptions", files={"file": ("a.wav", english)}, data={"model": "base", "quality": "speed"}
    )
    assert wrong.status_code == 422 and "model=auto only" in wrong.json()["error"]["message"]
