"""Model catalog: maps the model names clients use to local CTranslate2 model directories."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from serve_app.core.errors import ModelUnavailable, UnknownModel

# Whisper's language codes (faster_whisper.tokenizer._LANGUAGE_CODES), kept here so the
# API can answer /languages without importing the model stack.
WHISPER_LANGUAGES = (
    "af am ar as az ba be bg bn bo br bs ca cs cy da de el en es et eu fa fi fo fr gl gu ha haw "
    "he hi hr ht hu hy id is it ja jw ka kk km kn ko la lb ln lo lt lv mg mi mk ml mn mr ms mt "
    "my ne nl nn no oc pa pl ps pt ro ru sa sd si sk sl sn so sq sr su sv sw ta te tg th tk tl "
    "tr tt uk ur uz vi yi yo zh yue"
).split()


@dataclass(frozen=True)
class ModelSpec:
    """One catalog entry."""

    name: str
    description: str
    multilingual: bool
    source: dict = field(default_factory=dict)
    hf_id: str | None = None

    @property
    def languages(self) -> list[str]:
        return list(WHISPER_LANGUAGES) if self.multilingual else ["en"]

    @property
    def tasks(self) -> list[str]:
        return ["transcribe", "translate"] if self.multilingual else ["transcribe"]


class ModelCatalog:
    """The catalog file plus the logic that turns an entry into a directory on disk."""

    def __init__(self, specs: dict[str, ModelSpec], cache_dir: Path, auto: tuple = ()):
        self.specs = specs
        self.cache_dir = Path(cache_dir)
        self.auto = auto  # model=auto's rules (serve_app.asr.autoselect.AutoRule), in order

    @classmethod
    def load(cls, path: Path, cache_dir: Path) -> ModelCatalog:
        raw = yaml.safe_load(Path(path).read_text()) or {}
        specs = {
            name: ModelSpec(
                name=name,
                description=entry.get("description", ""),
                multilingual=bool(entry.get("multilingual", False)),
                source=entry.get("source") or {},
                hf_id=entry.get("hf_id"),
            )
            for name, entry in (raw.get("models") or {}).items()
        }
        from serve_app.asr.autoselect import AutoRule

        auto = tuple(AutoRule.parse(rule) for rule in raw.get("auto") or [])
        for rule in auto:
            for model in rule.models:
                if model not in specs:
                    raise ValueError(f"auto rule {rule}: model '{model}' is not in the catalog")
        return cls(specs, cache_dir, auto)

    def choice(self, served: list[str], quality: str, task: str):
        """``model=auto``'s choice among ``served`` (serve_app.asr.autoselect.ModelChoice)."""
        from serve_app.asr.autoselect import ModelChoice

        return ModelChoice(quality, task, tuple((m, self.specs[m].multilingual) for m in served), self.auto)

    def get(self, name: str) -> ModelSpec:
        try:
            return self.specs[name]
        except KeyError:
            raise UnknownModel(
                f"Model '{name}' is not in the catalog; known models: {', '.join(sorted(self.specs))}."
            ) from None

    def resolve(self, name: str) -> str:
        """A local model directory for ``name`` (assembled on first use), or its hub id.

        Raises ModelUnavailable when no source is usable on this machine.
        """
        spec = self.get(name)
        source = spec.source
        try:
            if "package" in source and "parts" not in source:
                path = _package_path(source["package"], source.get("path", ""))
                if (path / "model.bin").is_file():
                    return str(path)
            if "parts" in source:
                return str(self._assemble(spec))
        except FileNotFoundError as exc:
            reason = str(exc)
        else:
            reason = "no usable source"
        if spec.hf_id and os.environ.get("HF_HUB_OFFLINE", "0") in ("0", "", "false"):
            return spec.hf_id
        raise ModelUnavailable(f"Model '{name}' is not available on this machine: {reason}.")

    def prepare(self, names) -> dict[str, str]:
        """Each of ``names`` resolved now (``base`` assembled once, checked by sha256): its path."""
        return {name: self.resolve(name) for name in names}

    def _assemble(self, spec: ModelSpec) -> Path:
        source = spec.source
        target_dir = self.cache_dir / "models" / spec.name
        target = target_dir / source.get("target", "model.bin")
        marker = target_dir / ".sha256"
        expected = source.get("sha256")
        if target.is_file() and marker.is_file() and marker.read_text().strip() == expected:
            return target_dir
        parts = [_package_path(p["package"], p["path"]) for p in source["parts"]]
        for part in parts:
            if not part.is_file():
                raise FileNotFoundError(f"missing model part {part}")
        target_dir.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        digest = hashlib.sha256()
        with partial.open("wb") as out:
            for part in parts:
                with part.open("rb") as fh:
                    while block := fh.read(8 << 20):
                        digest.update(block)
                        out.write(block)
        if expected and digest.hexdigest() != expected:
            partial.unlink(missing_ok=True)
            raise FileNotFoundError(f"assembled weights have sha256 {digest.hexdigest()}, expected {expected}")
        if "files_from" in source:
            side = _package_path(source["files_from"]["package"], source["files_from"]["path"])
            for item in side.iterdir():
                if item.is_file() and not item.name.startswith("model.bin"):
                    shutil.copy2(item, target_dir / item.name)
        os.replace(partial, target)  # atomic: a crash never leaves a half model.bin
        marker.write_text(expected or digest.hexdigest())
        return target_dir


def _package_path(package: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package} is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / relative
