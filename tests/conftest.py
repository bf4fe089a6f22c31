"""Fixtures every tier may use, and the tiers' order.

Tiers, each a folder with the infrastructure it needs, run in this order (fast feedback first,
one expensive service at a time): unit (pure: no database, model, network or subprocess), app
(the in-process app with the real PostgreSQL, S3 server, models and speech), serve (the Ray Serve
application, one per tier), lifecycle (whole services started and stopped), cluster (a Ray
cluster of several nodes). Each test is marked with its tier: ``pytest -m app``.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Services under test decode greedily unless a test asks for a beam: the same code as beam
# search (one CTranslate2 argument apart) at 60% of its CPU, where most tests check what was
# said, not how well. The serve tier runs beam 5, the production default (STT_BEAM_SIZE), as do
# the engine's own tests and the accuracy tests; the bench measures the defaults.
os.environ.setdefault("STT_BEAM_SIZE", "1")

import pytest  # noqa: E402

TIERS = ("unit", "app", "serve", "lifecycle", "cluster")
# The order in one pytest run; `make test` runs two at once (scripts/test-tiers.sh).


def _tier(item) -> str:
    parts = item.nodeid.split("/")
    return parts[1] if len(parts) > 2 and parts[1] in TIERS else "unit"


def pytest_collection_modifyitems(config, items):
    for item in items:
        item.add_marker(getattr(pytest.mark, _tier(item)))
    items.sort(key=lambda item: TIERS.index(_tier(item)))  # stable: file order within a tier


@pytest.fixture(scope="session")
def settings():
    from serve_app.core.settings import Settings

    return Settings()


@pytest.fixture(scope="session")
def catalog(settings):
    from serve_app.asr.catalog import ModelCatalog

    return ModelCatalog.load(settings.catalog_path, settings.cache_dir)


# -- databases on the machine's PostgreSQL (127.0.0.1:5432, trust auth) -------------------------
@pytest.fixture(scope="session")
def db_template():
    """The service's schema, migrated once a session; every database below is a copy of it."""
    from testkit.process import migrated_template

    with migrated_template() as name:
        yield name


def fresh_database(template: str):
    from testkit.process import fresh_database

    with fresh_database(template=template) as url:
        yield url


@pytest.fixture(scope="session")
def pg_dsn(db_template):
    """A database shared by the session's tests that need only the schema: open mode (no API
    key may be made in it)."""
    yield from fresh_database(db_template)


@pytest.fixture(scope="module")
def keyed_dsn(db_template):
    """A database of the module's own, for tests that make API keys (which end the open mode)."""
    yield from fresh_database(db_template)


@pytest.fixture
def job_dsn(db_template):
    """A database of the test's own: a JobWorker of one test can never claim another's jobs."""
    yield from fresh_database(db_template)


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-protocol server (moto in server mode) on 127.0.0.1, with a bucket."""
    import boto3
    from moto.server import ThreadedMotoServer

    from deployments.local_cluster import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="stt-test")
    yield {"endpoint": endpoint, "bucket": "stt-test"}
    server.stop()


BOTH_BLOB_STORES = pytest.mark.parametrize("blob_settings", ["file", "s3"], indirect=True)


@pytest.fixture
def blob_settings(request, tmp_path):
    """Settings overrides for a BlobStore: the local one (file://, the default), or S3 via s3fs
    for the tests where the store is what is tested (``@BOTH_BLOB_STORES``)."""
    if getattr(request, "param", "file") == "file":
        return {"blob_url": f"file://{tmp_path / 'blobs'}"}
    s3 = request.getfixturevalue("s3_server")
    return {
        "blob_url": f"s3://{s3['bucket']}/{request.node.name[-40:].replace('[', '-').replace(']', '')}",
        "s3_endpoint_url": s3["endpoint"],
        "s3_region": "us-east-1",
        "s3_access_key": "testing",
        "s3_secret_key": "testing",
    }
