"""Shared fixtures. The Ray Serve application starts once per test session (slow: ~1 min)."""

from __future__ import annotations

import os
import socket

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "/serve/" in str(item.fspath):
            item.add_marker(pytest.mark.serve)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def settings():
    from serve_app.settings import Settings

    return Settings()


@pytest.fixture(scope="session")
def catalog(settings):
    from serve_app.catalog import ModelCatalog

    return ModelCatalog.load(settings.catalog_path, settings.cache_dir)
