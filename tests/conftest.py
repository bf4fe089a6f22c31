"""Shared fixtures. The Ray Serve application starts once per test session (slow: ~1 min)."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from deployments.cli import free_port  # noqa: E402


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "/serve/" in str(item.fspath):
            item.add_marker(pytest.mark.serve)
        if "/cluster/" in str(item.fspath):
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def settings():
    from serve_app.settings import Settings

    return Settings()


@pytest.fixture(scope="session")
def catalog(settings):
    from serve_app.catalog import ModelCatalog

    return ModelCatalog.load(settings.catalog_path, settings.cache_dir)


def _fresh_database():
    """A new database on the machine's PostgreSQL (127.0.0.1:5432, trust auth), dropped after."""
    from testkit.process import fresh_database

    with fresh_database() as url:
        yield url


@pytest.fixture(scope="session")
def pg_dsn():
    """The unit tests' database: open mode (no API key may be made in it)."""
    yield from _fresh_database()


@pytest.fixture(scope="module")
def keyed_dsn():
    """A database of the module's own, for tests that make API keys (which end the open mode)."""
    yield from _fresh_database()


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-protocol server (moto in server mode) on 127.0.0.1, with a bucket."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="stt-test")
    yield {"endpoint": endpoint, "bucket": "stt-test"}
    server.stop()


@pytest.fixture(params=["file", "s3"])
def blob_settings(request, tmp_path):
    """Settings overrides for each BlobStore backend: the local default, and S3 via s3fs."""
    if request.param == "file":
        return {"blob_url": f"file://{tmp_path / 'blobs'}"}
    s3 = request.getfixturevalue("s3_server")
    return {
        "blob_url": f"s3://{s3['bucket']}/{request.node.name[-40:].replace('[', '-').replace(']', '')}",
        "s3_endpoint_url": s3["endpoint"],
        "s3_region": "us-east-1",
        "s3_access_key": "testing",
        "s3_secret_key": "testing",
    }


@pytest.fixture(scope="session")
def tokenizer(catalog):
    """tiny.en's real Whisper tokenizer (no model loaded)."""
    from pathlib import Path

    import tokenizers
    from faster_whisper.tokenizer import Tokenizer

    path = Path(catalog.resolve("tiny.en")) / "tokenizer.json"
    return Tokenizer(tokenizers.Tokenizer.from_file(str(path)), False, task="transcribe", language="en")
