"""Diarization through the real Ray Serve app: the Preprocessor sends each piece to the
Diarizer deployment beside its Transcriber, sync (the openai SDK's diarized_json) and as an
async job (its options kept in the job row, run by the JobWorker)."""

from __future__ import annotations

import openai
import pytest

from testkit import conversations
from testkit.cache import folder
from tests.serve.test_jobs import wait_all

conversations.require_espeak()


@pytest.fixture(scope="module")
def talk():
    return conversations.build("serve", ["piper", "espeak_f1"], turns=10, seed=7, out=folder())


def test_openai_sdk_diarized_json(service, talk):
    sdk = openai.OpenAI(base_url=service.url + "/v1", api_key=service.key, timeout=300, max_retries=0)
    result = sdk.audio.transcriptions.create(
        file=("talk.wav", talk.path.read_bytes()), model="tiny.en", response_format="diarized_json"
    )
    assert {s.speaker for s in result.segments} == {"A", "B"}
    # Each letter is one person: segments inside a turn have the letter of that turn's speaker.
    letters: dict[str, set[str]] = {}
    for segment in result.segments:
        truth = talk.speaker_at((segment.start + segment.end) / 2)
        if truth is not None:
            letters.setdefault(truth, set()).add(segment.speaker)
    assert all(len(v) == 1 for v in letters.values()) and len(letters) == 2, letters


def test_async_job_with_diarization(service, talk):
    with service.client() as client:
        response = client.post(
            "/api/v1/transcriptions",
            files={"file": ("talk.wav", talk.path.read_bytes())},
            data={"sync": "false", "model": "tiny.en", "diarize": "true", "max_speakers": "3"},
        )
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        wait_all(service, [job_id], timeout=300)
        result = client.get(f"/api/v1/transcriptions/{job_id}/download", params={"format": "json"}).json()
        assert len(result["speakers"]) == 2, result["speakers"]
        vtt = client.get(f"/api/v1/transcriptions/{job_id}/download", params={"format": "vtt"}).text
        assert vtt.count("<v SPEAKER_00>") >= 3 and vtt.count("<v SPEAKER_01>") >= 3, vtt
        models = client.get("/api/v1/models").json()["models"]
        assert all(m["diarization"] for m in models)
