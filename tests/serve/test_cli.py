"""``stt`` at a terminal, against the running app: the files it writes, its exit status, its lines."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import srt

from testkit.speech import DATA, corpus_wer, transcripts, wer

pytestmark = pytest.mark.serve

REPO = Path(__file__).resolve().parents[2]
FILES = ["harvard_01.wav", "harvard_02.wav", "harvard_03.wav"]


def stt(service, *args, tty: bool = False, **kw) -> subprocess.CompletedProcess:
    env = os.environ | {"STT_API_KEY": service.key, "STT_URL": service.url, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "cli", *args]
    if tty:  # under a pseudo-terminal, as a person at a terminal runs it
        command = ["script", "-qec", " ".join(f"'{a}'" for a in command), "/dev/null"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, **kw)


@pytest.fixture
def recordings(tmp_path):
    for name in FILES:
        shutil.copy(DATA / name, tmp_path / name)
    return tmp_path


def test_transcribe_writes_one_file_per_input(service, recordings):
    done = stt(service, "transcribe", *[str(recordings / n) for n in FILES], "--concurrency", "3")
    assert done.returncode == 0, done.stderr
    assert "\x1b[" not in done.stdout + done.stderr  # piped: no bars, no escape codes
    lines = done.stdout.splitlines()
    assert sorted(lines) == sorted(f"{recordings / n} -> {recordings / n.replace('.wav', '.srt')}" for n in FILES)
    pairs = []
    for name in FILES:
        subtitles = list(srt.parse((recordings / name.replace(".wav", ".srt")).read_text()))
        pairs.append((transcripts()[name], " ".join(s.content for s in subtitles)))
    assert all(hypothesis for _, hypothesis in pairs) and corpus_wer(pairs) < 15

    again = stt(service, "transcribe", str(recordings / FILES[0]))  # the output exists: skipped
    assert again.returncode == 0 and again.stdout == "" and "skipped" in again.stderr and "--force" in again.stderr


def test_async_json_into_a_folder_then_jobs_commands(service, recordings, tmp_path):
    out = tmp_path / "out"
    done = stt(
        service, "transcribe", str(recordings / FILES[1]), "--async", "--format", "json",
        "--out", str(out), "--word-timestamps", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    line = json.loads(done.stdout)
    assert line["status"] == "done" and line["output"] == str(out / "harvard_02.json")
    result = json.loads((out / "harvard_02.json").read_text())
    assert wer(transcripts()[FILES[1]], result["text"]) < 15 and result["segments"][0]["words"]
    job_id = line["job_id"]

    listed = stt(service, "jobs", "list", "--search", "harvard_02", "--json")
    assert job_id in [j["id"] for j in json.loads(listed.stdout)["items"]]
    shown = stt(service, "jobs", "show", job_id)
    assert "COMPLETED" in shown.stdout and wer(transcripts()[FILES[1]], shown.stdout.split("\n\n", 1)[1]) < 15
    vtt = stt(service, "jobs", "download", job_id, "--format", "vtt")
    assert vtt.returncode == 0 and vtt.stdout.startswith("WEBVTT")
    assert stt(service, "jobs", "delete", job_id).stdout.strip() == f"deleted {job_id}"
    gone = stt(service, "jobs", "show", job_id)
    assert gone.returncode == 2 and gone.stderr.startswith("stt: job_not_found: ")


def test_a_bad_file_fails_with_one_clear_line(service, recordings):
    (recordings / "notes.mp3").write_text("these are notes, not audio\n" * 50)
    done = stt(service, "transcribe", str(recordings / "notes.mp3"), str(recordings / FILES[2]), "--format", "txt")
    assert done.returncode == 1
    assert (recordings / "harvard_03.txt").exists() and not (recordings / "notes.txt").exists()
    errors = [line for line in done.stderr.splitlines() if line.startswith("stt: ")]
    assert errors[0].startswith(f"stt: {recordings / 'notes.mp3'}: ") and "audio" in errors[0].lower(), errors
    assert errors[-1] == "stt: 1 of 2 files failed"


def test_at_a_terminal_it_draws_bars(service, recordings):
    done = stt(service, "transcribe", str(recordings / FILES[0]), "--format", "vtt", "--async", tty=True)
    assert done.returncode == 0, done.stdout
    assert "all files" in done.stdout and "harvard_01.wav" in done.stdout  # rich's bars, on the terminal
    assert (recordings / "harvard_01.vtt").read_text().startswith("WEBVTT")


def test_models_health_and_errors(service):
    models = stt(service, "models", "--json")
    assert {m["id"] for m in json.loads(models.stdout)} == {"tiny.en", "base"}
    assert "tiny.en" in stt(service, "models").stdout
    health = stt(service, "health")
    assert health.returncode == 0 and health.stdout.startswith("status=ok")
    refused = stt(service, "jobs", "list", "--api-key", "stt_nope_nope")
    assert refused.returncode == 2 and refused.stderr.startswith("stt: ") and "key" in refused.stderr.lower()
    nobody = stt(service, "health", "--url", "http://127.0.0.1:9")
    assert nobody.returncode == 2 and "cannot reach the service at http://127.0.0.1:9" in nobody.stderr
    helped = stt(service, "--help")
    assert "transcribe" in helped.stdout and "serve" in helped.stdout
