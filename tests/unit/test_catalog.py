"""The model catalog resolves the offline packages and refuses what it cannot serve."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from serve_app.catalog import ModelCatalog
from serve_app.errors import ModelUnavailable, UnknownModel
from serve_app.settings import Settings

CATALOG = Path(__file__).resolve().parents[2] / "configs" / "models.yaml"


def test_tiny_en_is_the_packaged_directory(tmp_path):
    path = Path(ModelCatalog.load(CATALOG, tmp_path).resolve("tiny.en"))
    assert (path / "model.bin").is_file() and (path / "tokenizer.json").is_file()


def test_base_is_assembled_once_and_checked(tmp_path):
    catalog = ModelCatalog.load(CATALOG, tmp_path)
    path = Path(catalog.resolve("base"))
    weights = path / "model.bin"
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert digest == catalog.get("base").source["sha256"]
    assert (path / "config.json").is_file() and (path / "tokenizer.json").is_file()
    mtime = weights.stat().st_mtime_ns
    assert catalog.resolve("base") == str(path)
    assert weights.stat().st_mtime_ns == mtime  # not rebuilt


def test_wrong_checksum_is_refused_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    raw = yaml.safe_load(CATALOG.read_text())
    raw["models"]["base"]["source"]["sha256"] = "0" * 64
    bad = tmp_path / "models.yaml"
    bad.write_text(yaml.safe_dump(raw))
    catalog = ModelCatalog.load(bad, tmp_path / "cache")
    with pytest.raises(ModelUnavailable, match="sha256"):
        catalog.resolve("base")
    assert not (tmp_path / "cache" / "models" / "base" / "model.bin").exists()


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
