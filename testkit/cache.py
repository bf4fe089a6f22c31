"""Test audio generated once and kept between runs: long recordings strung from the fixtures,
synthesized conversations. Kept under STT_TEST_CACHE (default ~/.cache/speechtotext/test-audio),
keyed by the recipe that makes each one, so a changed recipe makes a new file."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

CACHE = Path(os.environ.get("STT_TEST_CACHE", Path.home() / ".cache" / "speechtotext" / "test-audio"))


def key(recipe: dict) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def folder() -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    return CACHE


def kept(name: str, recipe: dict, make) -> tuple[bytes, dict]:
    """``make()`` -> (bytes, facts about them) once per recipe; later calls read them back.
    Written under a temporary name and moved into place, so a half-written file is never read."""
    base = folder() / f"{name}-{key(recipe)}"
    data, meta = base.with_suffix(".bin"), base.with_suffix(".json")
    if data.exists() and meta.exists():
        return data.read_bytes(), json.loads(meta.read_text())
    content, facts = make()
    for path, body in ((data, content), (meta, json.dumps(facts).encode())):
        partial = path.with_name(f"{path.name}.{os.getpid()}.part")
        partial.write_bytes(body)
        partial.replace(path)
    return content, facts
