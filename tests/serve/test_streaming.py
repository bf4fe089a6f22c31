"""Long recordings, events and batches on the real Ray Serve app: the audio of an async job is
read from S3 as a stream in the Preprocessor replica, its pieces go to the Transcriber as they
are decoded, and the events reach a client through HAProxy and the Ingress."""

from __future__ import annotations

import json
import time

from serve_app.audio.decode import plausible_seconds
from testkit.recordings import bomb, long_recording
from testkit.speech import audio, transcripts, wer


def test_a_long_async_job_streams_from_s3_with_progress_and_partial_texts(service):
    data, reference, seconds = long_recording(300, "opus")
    with service.client() as client:
        started = time.monotonic()
        response = client.post(
            "/api/v1/transcriptions", files={"file": ("talk.opus", data)}, data={"sync": "false", "model": "tiny.en"}
        )
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        events, kind, first_partial = [], None, None
        with client.stream("GET", f"/api/v1/transcriptions/{job_id}/events", timeout=600) as stream:
            assert stream.status_code == 200
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    events.append((kind, json.loads(line[6:])))
                    if kind == "partial" and first_partial is None:
                        first_partial = time.monotonic() - started
                    if kind in ("completed", "failed"):
                        break
    kinds = [k for k, _ in events]
    assert kinds[-1] == "completed", events[-2:]
    final = events[-1][1]
    assert wer(reference, final["text"]) < 15 and abs(final["duration"] - seconds) < 0.5
    partial = [e for k, e in events if k == "partial"]
    assert len(partial) >= 8 and first_partial is not None and first_partial < 30
    assert wer(" ".join(p["text"] for p in partial), final["text"]) < 2
    progress = [e["progress"] for k, e in events if k == "progress"]
    assert progress == sorted(progress)


def test_a_bomb_is_refused_at_once_and_the_replicas_carry_on(service):
    data = bomb()
    with service.client() as client:
        refused = client.post("/api/v1/transcriptions", files={"file": ("quiet.flac", data)})
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        # Stopped at the block that crossed what a file of its size can hold, not after its 6 hours.
        assert error["code"] == "implausible_audio"
        assert f"decodes to more than {plausible_seconds(len(data)):.0f} s" in error["message"], error
        fine = client.post("/api/v1/transcriptions", files={"file": ("a.wav", audio("harvard_05.wav"))})
        assert fine.status_code == 200


def test_a_batch_on_the_cluster(service):
    names = [f"harvard_0{n}.wav" for n in range(1, 9)]
    with service.client() as client:
        made = client.post(
            "/api/v1/batches",
            files=[("files", (n, audio(n))) for n in names],
            data={"model": "auto", "quality": "speed", "language": "en"},
        )
        assert made.status_code == 202, made.text
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            body = client.get(f"/api/v1/batches/{made.json()['id']}").json()
            if body["status"] not in ("PENDING", "PROCESSING"):
                break
            time.sleep(0.5)
    assert body["status"] == "COMPLETED", body["aggregate"]
    for entry in body["files"]:
        assert entry["model"] == "tiny.en" and wer(transcripts()[entry["filename"]], entry["text_preview"]) < 30
