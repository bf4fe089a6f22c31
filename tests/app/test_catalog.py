"""The model catalog resolves the offline packages and refuses what it cannot serve."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from serve_app.asr.catalog import ModelCatalog
from serve_app.core.errors import ModelUnavailable

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
