"""The model catalog's names, languages and tasks, and settings from the environment (no model file read)."""

from __future__ import annotations

from pathlib import Path

import pytest

from serve_app.asr.catalog import ModelCatalog
from serve_app.core.errors import UnknownModel
from serve_app.core.settings import Settings

CATALOG = Path(__file__).resolve().parents[2] / "configs" / "models.yaml"


def test_unknown_model_names_the_known_ones(tmp_path):
    with pytest.raises(UnknownModel, match="tiny.en"):
        ModelCatalog.load(CATALOG, tmp_path).resolve("large-v9")


def test_languages_and_tasks():
    catalog = ModelCatalog.load(CATALOG, Path("/nonexistent"))
    assert catalog.get("tiny.en").languages == ["en"]
    assert {"de", "es", "fr", "en"} <= set(catalog.get("base").languages)
    assert catalog.get("base").tasks == ["transcribe", "translate"]


def test_settings_from_environment(monkeypatch):
    monkeypatch.setenv("STT_MODELS", "base, tiny.en")
    monkeypatch.setenv("STT_PROFILE", "gpu")
    s = Settings()
    assert s.models == ["base", "tiny.en"]
    assert s.resolved_device == "cuda" and s.resolved_compute_type == "float16"
    monkeypatch.setenv("STT_PROFILE", "cpu")
    assert Settings().resolved_compute_type == "int8"
