"""The HTTP API in-process (no Ray): validation and the one error shape.

Uses LocalBackend, the same library code the deployments run, in this process.
"""

from __future__ import annotations

import httpx
import pytest

from serve_app.api import create_app
from serve_app.core.settings import Settings
from serve_app.transcription.service import TranscriptionService
from testkit.speech import audio


@pytest.fixture(scope="module")
def client(catalog, backend_for):
    settings = Settings(max_upload_mb=1)
    app = create_app(TranscriptionService(settings, catalog, backend_for(settings)))
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://localhost")


async def test_system_endpoints(client):
    assert (await client.get("/api/v1/health")).json()["models"] == ["tiny.en", "base"]
    models = (await client.get("/api/v1/models")).json()["models"]
    assert [m["id"] for m in models] == ["tiny.en", "base"] and models[0]["default"]
    assert (await client.get("/openapi.json")).status_code == 200


@pytest.mark.parametrize(
    "files, form, status, code",
    [
        ({"file": ("a.wav", b"")}, {}, 400, "empty_file"),
        ({"file": ("notes.txt", b"hello, this is not audio at all" * 10)}, {}, 400, "invalid_audio"),
        ({"file": ("a.wav", b"RIFF")}, {"model": "large"}, 404, "model_not_found"),
        ({"file": ("a.wav", b"RIFF")}, {"language": "fr"}, 400, "unsupported_language"),
        ({"file": ("a.wav", b"RIFF")}, {"sync": "false"}, 422, "jobs_unavailable"),
        ({"file": ("a.wav", b"RIFF")}, {"sync": "maybe"}, 422, "invalid_request"),
        ({"file": ("a.wav", b"RIFF")}, {"prompt": "x" * 900}, 422, "invalid_parameter"),
        ({"file": ("a.wav", b"RIFF")}, {"beam_size": "50"}, 422, "invalid_parameter"),
        ({"file": ("a.wav", b"RIFF")}, {"beam_size": "five"}, 422, "invalid_request"),
        ({"file": ("a.wav", b"RIFF")}, {"temperature": "3"}, 422, "invalid_parameter"),
        ({"file": ("a.wav", b"RIFF")}, {"task": "summarize"}, 422, "invalid_parameter"),
        ({"file": ("a.wav", b"RIFF")}, {"task": "translate"}, 400, "unsupported_task"),
        ({"file": ("a.wav", b"RIFF")}, {"language": "e\x00n"}, 422, "invalid_parameter"),
        (None, {}, 422, "invalid_request"),
        ({"file": ("big.wav", b"\0" * (2 * 2**20))}, {}, 413, "payload_too_large"),
    ],
)
async def test_bad_requests(client, files, form, status, code):
    response = await client.post("/api/v1/transcriptions", files=files, data=form)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert response.headers["x-request-id"]


async def test_wrong_extension_is_judged_by_content(client):
    # A real recording named .txt is still audio; the extension is not trusted either way.
    response = await client.post("/api/v1/transcriptions", files={"file": ("speech.txt", audio("harvard_06.wav"))})
    assert response.status_code == 200, response.text
    assert "salmon" in response.json()["text"].lower()


async def test_an_internal_error_says_nothing_about_internals(catalog):
    class Broken:
        async def transcribe(self, *args):
            raise RuntimeError("secret detail of /srv/internal")

    settings = Settings()
    app = create_app(TranscriptionService(settings, catalog, Broken()))
    # Starlette sends the 500 and then re-raises for the server's log: let the transport log it too.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        response = await client.post("/api/v1/transcriptions", files={"file": ("a.wav", audio("harvard_01.wav"))})
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["code"] == "internal_error" and response.headers["x-request-id"] in error["message"]
    assert "RuntimeError" not in error["message"] and "secret" not in error["message"]


def test_content_disposition_holds_any_file_name():
    from serve_app.api.routers.transcriptions import attachment

    header = attachment('a "quoted" \\ name; 会议.txt')
    assert header == (
        'attachment; filename="a _quoted_ _ name; __.txt"; '
        "filename*=UTF-8''a%20%22quoted%22%20%5C%20name%3B%20%E4%BC%9A%E8%AE%AE.txt"
    )
    header.encode("latin-1")  # what an HTTP header must be


async def test_a_chunked_upload_over_the_limit_is_cut_off_while_it_arrives(client):
    sent = []

    async def body():  # no Content-Length: httpx sends it chunked
        yield b'--x\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n\r\n'
        for _ in range(16):
            sent.append(1)
            yield b"\0" * (256 * 1024)
        yield b"\r\n--x--\r\n"

    response = await client.post(
        "/api/v1/transcriptions", content=body(), headers={"content-type": "multipart/form-data; boundary=x"}
    )
    assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"
    assert len(sent) < 16  # the limit is 1 MiB; 4 MiB were on offer


async def test_oversized_headers_get_the_json_error_shape(client):
    response = await client.get("/api/v1/health", headers={"X-Padding": "p" * 40_000})
    assert response.status_code == 431 and response.json()["error"]["code"] == "headers_too_large"
    assert (await client.get("/api/v1/health", headers={"X-Padding": "p" * 8000})).status_code == 200


async def test_a_language_that_is_no_code_is_refused_before_any_model_check(client):
    response = await client.post(
        "/api/v1/transcriptions", files={"file": ("a.wav", b"RIFF")}, data={"language": "en'; DROP TABLE x;--"}
    )
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_parameter"


async def test_webhooks_are_off_without_a_secret(client):
    response = await client.post(
        "/api/v1/transcriptions",
        files={"file": ("a.wav", audio("harvard_01.wav"))},
        data={"sync": "false", "webhook_url": "https://8.8.8.8/hook"},
    )
    assert response.status_code == 422 and response.json()["error"]["code"] == "webhooks_disabled"
    secret = await client.get("/api/v1/webhook-secret")
    assert secret.status_code == 422 and secret.json()["error"]["code"] == "webhooks_disabled"


async def test_without_a_database_job_and_key_routes_say_so(client, catalog, backend_for):
    """An instance with no job store answers 422 jobs_unavailable on every route that needs one,
    never a 404 that says the job or key does not exist."""
    for path in ("/api/v1/transcriptions", f"/api/v1/transcriptions/{'0' * 32}", "/api/v1/stats"):
        response = await client.get(path)
        assert response.status_code == 422 and response.json()["error"]["code"] == "jobs_unavailable", path
    admin = create_app(TranscriptionService(Settings(api_key="sk-admin"), catalog, backend_for()))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=admin), base_url="http://localhost") as http:
        response = await http.get("/api/v1/admin/keys", headers={"Authorization": "Bearer sk-admin"})
    assert response.status_code == 422 and response.json()["error"]["code"] == "jobs_unavailable"
