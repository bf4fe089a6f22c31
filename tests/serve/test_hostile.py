"""A hostile corpus against the real application (HAProxy, two Ingress replicas, the models):
every case gets its documented answer (a 4xx with the JSON error shape, or for hostile but
legal input a 2xx that leaks nothing), none a 5xx or a hang, and the service is healthy after.

The webhook targets inside the network are refused at submission: nothing is sent to them.
"""

from __future__ import annotations

import time
import uuid
import wave
from io import BytesIO

import numpy as np
import pytest

from testkit.speech import audio
from testkit.synthesis import wav_bytes
from tests.unit.test_audio import silent_flac

T = "/api/v1/transcriptions"
WAV = audio("harvard_01.wav")
NUL = "\x00"


def lying_wav(seconds_claimed: int) -> bytes:
    buf = BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\0\1" * 8000)
    data = bytearray(buf.getvalue())
    data[40:44] = (seconds_claimed * 32000).to_bytes(4, "little")  # the data chunk claims more
    return bytes(data)


def multipart(filename: str, body: bytes = WAV, **fields: str) -> tuple[bytes, str]:
    """A raw multipart body: httpx would percent-encode the hostile file names."""
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode("utf-8", "surrogateescape")
        + body
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def upload(data: bytes = WAV, name: str = "a.wav", path: str = T, **form) -> dict:
    return {"method": "POST", "url": path, "files": {"file": (name, data)}, "data": form}


def raw(filename: str, body: bytes = WAV, **fields) -> dict:
    content, ctype = multipart(filename, body, **fields)
    return {"method": "POST", "url": T, "content": content, "headers": {"Content-Type": ctype}}


def get(url: str, **params) -> dict:
    return {"method": "GET", "url": url, "params": params}


CASES = {
    # -- containers that lie, are broken, or are not audio ------------------------------------
    "empty file": (upload(b""), 400, "empty_file"),
    "text named .wav": (upload(b"hello, not audio " * 100), 400, "invalid_audio"),
    "RIFF header only": (upload(b"RIFF\x00\x00\x00\x00WAVE"), 400, None),
    "wav claiming an hour": (upload(lying_wav(3600)), 400, "truncated_audio"),
    "png bytes": (upload(b"\x89PNG\r\n\x1a\n" + b"\0" * 2000, "a.png"), None, None),
    "zip bytes": (upload(b"PK\x03\x04" + b"\0" * 2000, "a.zip"), 400, None),
    "id3 tag and nothing": (upload(b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\0" * 500, "a.mp3"), 400, None),
    "random bytes": (upload(bytes(range(256)) * 400), 400, None),
    "wav of a single sample": (upload(wav_bytes(np.full(1, 16))), None, None),
    "wav of a single sample, async": (upload(wav_bytes(np.full(1, 16)), sync="false"), None, None),
    "wav of two samples, OpenAI's route": (
        upload(wav_bytes(np.full(2, 16)), path="/v1/audio/transcriptions", model="tiny.en"),
        None,
        None,
    ),
    "half a flac": (upload(audio("harvard_long.flac")[:3000], "a.flac"), 400, None),
    "flac bomb (30 min of silence, no length)": (upload(silent_flac(1800), "bomb.flac"), 400, "implausible_audio"),
    "no file field": ({"method": "POST", "url": T, "data": {"model": "tiny.en"}}, 422, "invalid_request"),
    "json instead of a form": ({"method": "POST", "url": T, "json": {"file": "x"}}, 422, "invalid_request"),
    "broken multipart": (
        {"method": "POST", "url": T, "content": b"--x\r\nnope", "headers": {"Content-Type": "multipart/form-data"}},
        400,
        None,
    ),
    # -- huge fields ---------------------------------------------------------------------------
    "1 MB prompt": (upload(prompt="word " * 200_000), 422, None),
    "10 KB model name": (upload(model="m" * 10_000), 422, "invalid_parameter"),
    "1 KB language": (upload(language="x" * 1000), 422, "invalid_parameter"),
    "10 KB file name": (upload(b"nope" * 100, "n" * 10_000 + ".wav"), 400, "invalid_request"),
    "5 KB webhook url": (upload(sync="false", webhook_url="https://example.com/" + "a" * 5000), 422, None),
    "2 KB cursor": (get(T, cursor="A" * 2000), 422, "invalid_request"),
    # -- path traversal and SQL in every parameter ------------------------------------------------
    "traversal in the job id": (get(f"{T}/..%2F..%2Fetc%2Fpasswd"), 404, None),
    "SQL in the job id": (get(f"{T}/' OR '1'='1"), 404, "job_not_found"),
    "SQL in the download id": (get(f"{T}/1;DROP TABLE transcription_jobs/download"), 404, "job_not_found"),
    "SQL in delete": ({"method": "DELETE", "url": f"{T}/' OR 1=1 --"}, 404, "job_not_found"),
    "SQL in q": (get(T, q="' OR 1=1; DROP TABLE transcription_jobs; --"), 200, None),
    "SQL in status": (get(T, status="PENDING' OR '1'='1"), 422, "invalid_request"),
    "SQL in the cursor": (get(T, cursor="MjAyNi0wMS0wMXwnIE9SIDE9MQ"), 422, "invalid_cursor"),
    "negative limit": (get(T, limit="-1"), 422, "invalid_request"),
    "huge limit": (get(T, limit="1" + "0" * 30), 422, "invalid_request"),
    "traversal in format": (get(f"{T}/{uuid.uuid4()}/download", format="../../etc/passwd"), 422, None),
    "traversal in model": (upload(model="../../../etc/passwd"), 404, "model_not_found"),
    "SQL in language": (upload(language="en'; DROP TABLE x;--"), 422, "invalid_parameter"),
    "shell in task": (upload(task="$(rm -rf /)"), 422, None),
    "script in response_format": (upload(response_format="<script>alert(1)</script>"), 422, None),
    "beam_size a billion": (upload(beam_size="1000000000"), 422, "invalid_parameter"),
    "temperature nan": (upload(temperature="nan"), 422, None),
    "temperature infinity": (upload(temperature="inf"), 422, None),
    "traversal in the tenant filter": (get(T, tenant="../../other"), 403, "forbidden"),
    "traversal in the admin key id": ({"method": "DELETE", "url": "/api/v1/admin/keys/..%2F..%2Fx"}, None, None),
    # -- bad Unicode ---------------------------------------------------------------------------
    "NUL in the prompt": (upload(prompt=f"a{NUL}b"), 422, "invalid_parameter"),
    "NUL in q": (get(T, q=f"a{NUL}b"), 422, "invalid_parameter"),
    "NUL in the file name, not audio": (raw(f"a{NUL}b.wav", b"nope" * 100), 400, "invalid_audio"),
    "quote and CRLF in the file name, not audio": (raw('a"\r\nX-Evil: 1.wav', b"nope" * 100), 400, None),
    "invalid UTF-8 in the file name, not audio": (raw("\udcff\udcfe.wav", b"nope" * 100), 400, None),
    "right-to-left override in q": (get(T, q="\u202egnp.exe"), 422, "invalid_parameter"),
    "lone surrogate percent-encoded in q": (get(T + "?q=%ED%A0%80"), None, None),
    # -- keys -----------------------------------------------------------------------------------
    "no key": ({"method": "GET", "url": T, "headers": {"Authorization": ""}}, 401, "invalid_api_key"),
    "8 KB key": ({"method": "GET", "url": T, "headers": {"Authorization": "Bearer " + "k" * 8000}}, 401, None),
    "SQL as the key": (
        {"method": "GET", "url": T, "headers": {"Authorization": "", "X-API-Key": "' OR 1=1 --"}},
        401,
        None,
    ),
    "unknown key of the right shape": (
        {"method": "GET", "url": T, "headers": {"Authorization": "Bearer stt_0123456789ab_" + "e" * 64}},
        401,
        "invalid_api_key",
    ),
    # -- foreign and missing ids ------------------------------------------------------------------
    "an id that does not exist": (get(f"{T}/{uuid.uuid4()}"), 404, "job_not_found"),
    "an id that is not a uuid": (get(f"{T}/12345"), 404, "job_not_found"),
    # -- webhook targets inside the network (refused, nothing sent) -------------------------------
    "webhook to PostgreSQL": (upload(sync="false", webhook_url="http://127.0.0.1:5432/"), 422, "invalid_webhook_url"),
    "webhook to cloud metadata": (
        upload(sync="false", webhook_url="http://169.254.169.254/latest/meta-data/"),
        422,
        "invalid_webhook_url",
    ),
    "webhook to Ray's dashboard": (
        upload(sync="false", webhook_url="http://localhost:8265/api/jobs/"),
        422,
        "invalid_webhook_url",
    ),
    "webhook to a file": (upload(sync="false", webhook_url="file:///etc/passwd"), 422, "invalid_webhook_url"),
    "webhook to gopher": (upload(sync="false", webhook_url="gopher://127.0.0.1:6379/_"), 422, "invalid_webhook_url"),
    # -- headers and methods ------------------------------------------------------------------
    "64 KB header": ({"method": "GET", "url": "/api/v1/stats", "headers": {"X-Padding": "p" * 65536}}, 431, None),
    "10 KB X-Request-ID": (
        {"method": "GET", "url": "/api/v1/stats", "headers": {"X-Request-ID": "r" * 10_000}},
        200,
        None,
    ),
    "unknown route": (get("/api/v1/../../etc/passwd"), 404, None),
    "wrong method": ({"method": "PATCH", "url": T}, 405, "method_not_allowed"),
    "OpenAI: no model": (
        {"method": "POST", "url": "/v1/audio/transcriptions", "files": {"file": ("a.wav", WAV)}},
        400,
        None,
    ),
    "OpenAI: NUL in the prompt": (
        upload(path="/v1/audio/transcriptions", model="whisper-1", prompt=f"x{NUL}"),
        400,
        "invalid_parameter",
    ),
    "OpenAI: bad granularity": (
        upload(path="/v1/audio/transcriptions", model="whisper-1", **{"timestamp_granularities[]": "char"}),
        400,
        "invalid_parameter",
    ),
}


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 40


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_case(service, name):
    request, status, code = CASES[name]
    with service.client(timeout=120) as client:
        started = time.monotonic()
        response = client.request(**request)
        took = time.monotonic() - started
    assert response.status_code < 500, (name, response.status_code, response.text[:300])
    assert took < 60, f"{name} took {took:.0f} s"
    if status is not None:
        assert response.status_code == status, (name, response.text[:300])
    if response.status_code >= 400:
        body = response.json()  # always the JSON error shape, never an HTML page
        error = body["error"]
        assert error["message"] and "Traceback" not in error["message"], name
        if code is not None:
            assert error["code"] == code, (name, error)
    if name == "SQL in q":
        assert response.json()["items"] == []
    if name == "10 KB X-Request-ID":
        # HAProxy drops it (deployments/haproxy-local): Serve, which echoes the client's id as
        # it came, makes a UUID instead, and the service uses that one; one id in the answer.
        ids = response.headers.get_list("x-request-id")
        assert len(ids) == 1 and len(ids[0]) <= 128, ids


def test_a_sane_request_id_comes_back_once(service):
    with service.client() as client:
        response = client.get("/api/v1/health", headers={"X-Request-ID": "trace-42.a:b"})
    assert response.headers.get_list("x-request-id") == ["trace-42.a:b"]


def test_a_slow_upload_does_not_hold_up_others(service):
    """A client trickling its upload (~1 KB every 0.2 s) is served when it finishes; others are
    answered meanwhile."""
    import threading

    body, ctype = multipart("slow.wav", WAV[:20_000])
    result = {}
    answered = threading.Event()

    def trickle():
        def pieces():
            # A kilobyte at a time until the health call below has its answer: the upload is
            # still arriving all the while.
            for i in range(0, len(body), 1024):
                answered.wait(0.05)
                yield body[i : i + 1024]
            answered.wait(120)

        with service.client(timeout=180) as client:
            result["response"] = client.post(T, content=pieces(), headers={"Content-Type": ctype})

    thread = threading.Thread(target=trickle)
    thread.start()
    with service.client(timeout=60) as client:
        assert client.get("/api/v1/health").status_code == 200
    assert thread.is_alive(), "the upload was over before the health call got its answer: this shows nothing"
    answered.set()
    thread.join(180)
    assert result["response"].status_code in (200, 400)


def test_the_service_is_healthy_after_the_corpus(service):
    with service.client() as client:
        assert client.get("/api/v1/health").json()["status"] == "ok"
        done = client.post(T, files={"file": ("after.wav", WAV)})
        assert done.status_code == 200 and done.json()["text"]
        assert client.get(T, params={"limit": 1}).status_code == 200


def test_no_server_errors_in_the_openapi_schema_run(service, tmp_path):
    """A bounded schemathesis run over every route of /openapi.json: no 5xx, whatever it sends."""
    schemathesis = pytest.importorskip("schemathesis")
    del schemathesis
    import subprocess
    import sys

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"{service.url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "40",
            "--header",
            f"Authorization: Bearer {service.key}",
            "--request-timeout",
            "120",
            "--exclude-method",
            "DELETE",
            "--suppress-health-check",
            "all",
            "--phases",
            "examples,coverage,fuzzing",
            "--seed",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,  # its cache (.schemathesis/) goes there, not into the checkout
    )
    print(done.stdout[-3000:])
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-2000:]
