"""The one Pipeline, as LocalBackend hosts it in this process (the Preprocessor deployment hosts
the same object over handles): every check before any audio is decoded, the decode budget held
while a recording runs, at most PIECES_IN_FLIGHT pieces of one recording at the model, stored
audio read from the blob store the backend was built with."""

from __future__ import annotations

import asyncio

import pytest

from serve_app.audio.preprocess import PIECES_IN_FLIGHT, STREAM_SECONDS, PrepareOptions
from serve_app.core.errors import InvalidParameter, ServiceError, UnknownModel
from serve_app.core.settings import Settings
from serve_app.core.transcript import DecodeOptions, DiarizeOptions
from serve_app.jobs.blobs import BlobStore
from serve_app.transcription.assembly import Assembly
from serve_app.transcription.pipeline import BlobSource, Pipeline
from testkit.recordings import long_recording
from testkit.speech import audio, transcripts, wer

EN = DecodeOptions(language="en")


async def run(pipeline: Pipeline, source, target="tiny.en", speakers=None):
    return await Assembly().collect(pipeline.run(source, target, EN, PrepareOptions(), speakers))


async def test_every_check_comes_before_any_decoding(backend_for, tmp_path):
    blobs = BlobStore(f"file://{tmp_path}")
    pipeline = backend_for(Settings(diarization=False), blobs).pipeline
    with pytest.raises(UnknownModel):
        await run(pipeline, audio("harvard_01.wav"), target="large-v9")
    with pytest.raises(ServiceError) as missing:
        await run(pipeline, BlobSource("audio/default/gone/a.wav"))
    assert missing.value.code == "audio_missing"
    no_diarizer = Pipeline(pipeline.preprocessor, pipeline.transcribers, budget=pipeline.budget)
    with pytest.raises(InvalidParameter) as refused:
        await run(no_diarizer, audio("harvard_01.wav"), speakers=DiarizeOptions())
    assert (refused.value.status_code, refused.value.code) == (400, "diarization_unavailable")
    assert pipeline.budget.reserved == 0 and pipeline.burst.decoding == 0  # nothing was started


async def test_stored_audio_is_read_from_the_backends_own_blob_store(backend_for, catalog, tmp_path):
    """A backend reads from the store it was built with: building a service over other jobs
    does not re-point it (a shared backend once read every service's audio from the last one's)."""
    from serve_app.jobs.service import JobService
    from serve_app.jobs.store import JobStore
    from serve_app.transcription.service import TranscriptionService

    mine, other = BlobStore(f"file://{tmp_path / 'mine'}"), BlobStore(f"file://{tmp_path / 'other'}")
    backend = backend_for(Settings(), mine)
    TranscriptionService(Settings(), catalog, backend, JobService(JobStore("postgresql://unused@127.0.0.1:1/x"), other))
    assert backend.pipeline.blobs is mine
    await mine.put_bytes("audio/default/j/a.wav", audio("harvard_02.wav"))
    transcript = await run(backend.pipeline, BlobSource("audio/default/j/a.wav"))
    assert wer(transcripts()["harvard_02.wav"], transcript.text) < 25


async def test_the_budget_is_held_and_pieces_in_flight_are_bounded(local_backend, models):
    """A 5-minute recording: its stream reserves STREAM_SECONDS of the budget while it runs, and
    never more than PIECES_IN_FLIGHT of its pieces are at the model at once."""
    recording, text, _ = long_recording(300)

    class Counting:
        def __init__(self, model):
            self.model, self.multilingual = model, model.multilingual
            self.now = self.most = 0

        async def detect_language(self, piece):
            return await self.model.detect_language(piece)

        async def transcribe_piece(self, piece, options):
            self.now += 1
            self.most = max(self.most, self.now)
            try:
                await asyncio.sleep(0.05)  # let the sender run ahead as far as the bound lets it
                return await self.model.transcribe_piece(piece, options)
            finally:
                self.now -= 1

    model = Counting(models.transcribers["tiny.en"])
    pipeline = Pipeline(local_backend.pipeline.preprocessor, {"tiny.en": model}, budget=local_backend.pipeline.budget)
    held = []

    async def watch():
        while True:
            held.append(pipeline.budget.reserved)
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch())
    try:
        transcript = await run(pipeline, recording)
    finally:
        watcher.cancel()
    assert max(held) == STREAM_SECONDS and pipeline.budget.reserved == 0
    assert 1 < model.most <= PIECES_IN_FLIGHT
    assert wer(text, transcript.text) < 20
