"""The layout docs/ARCHITECTURE.md states, held: serve_app is packages by stage, each stage imports
only the stages below it, serve_app knows nothing of Ray, the CLI or its libraries, there is no
import circle, and no module grows past 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MAX_LINES = 400

# serve_app's stages, bottom up. A stage may import the stages below it, never one above it or
# beside it (asr and diarization know nothing of each other).
STAGES = {
    "core": 0,
    "audio": 1,
    "asr": 2,
    "diarization": 2,
    "jobs": 3,
    "tenancy": 4,
    "transcription": 5,
    "api": 6,
}


def modules(package: str, repo: Path = REPO) -> dict[str, Path]:
    return {
        ".".join(path.relative_to(repo).with_suffix("").parts).removesuffix(".__init__"): path
        for path in (repo / package).rglob("*.py")
    }


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[0] == "serve_app" else None


def test_serve_app_is_packages_by_stage():
    top = sorted(p.name for p in (REPO / "serve_app").iterdir() if p.name != "__pycache__")
    packages = sorted(p for p in top if (REPO / "serve_app" / p / "__init__.py").exists())
    assert packages == sorted(STAGES), packages
    assert set(top) - set(packages) == {"__init__.py", "assets", "web"}, top
    for name in STAGES:
        doc = ast.get_docstring(ast.parse((REPO / "serve_app" / name / "__init__.py").read_text()))
        assert doc and len(doc) > 40, f"serve_app/{name}/__init__.py should say what the stage owns"


def upward_imports(repo: Path) -> list[str]:
    """Every import in ``repo``'s serve_app of a stage that is not below the importer's."""
    broken = set()
    for name, path in modules("serve_app", repo).items():
        here = stage(name)
        for target in imports(path) if here in STAGES else ():
            there = stage(target)
            if there in STAGES and there != here and STAGES[there] >= STAGES[here]:
                broken.add(f"{name} imports serve_app.{there} ({here} may not import {there})")
    return sorted(broken)


def test_each_stage_imports_only_the_stages_below_it():
    assert upward_imports(REPO) == []


def test_the_layering_rule_catches_what_it_forbids(tmp_path):
    """The rule above on a tree that breaks it, so that it cannot rot into a check of nothing."""
    (tmp_path / "serve_app" / "audio").mkdir(parents=True)
    (tmp_path / "serve_app" / "asr").mkdir()
    (tmp_path / "serve_app" / "audio" / "decode.py").write_text("from serve_app.jobs.store import JobStore\n")
    (tmp_path / "serve_app" / "asr" / "engine.py").write_text("import serve_app.diarization.encoder\n")
    assert upward_imports(tmp_path) == [
        "serve_app.asr.engine imports serve_app.diarization (asr may not import diarization)",
        "serve_app.audio.decode imports serve_app.jobs (audio may not import jobs)",
    ]


def test_serve_app_imports_neither_ray_nor_the_cli():
    for name, path in modules("serve_app").items():
        bad = {m for m in imports(path) if m.split(".")[0] in ("ray", "deployments", "cli", "click", "rich")}
        assert not bad, (name, bad)


def test_the_http_layer_does_not_import_model_code():
    for name, path in modules("serve_app").items():
        if stage(name) == "api":
            model_code = {m for m in imports(path) if m.startswith(("serve_app.asr.engine", "serve_app.asr.runner"))}
            assert not model_code, name


def test_no_import_circle():
    for package in ("serve_app", "deployments", "cli"):
        mods = modules(package)
        graph = {name: {m for m in imports(path) if m in mods and m != name} for name, path in mods.items()}

        for name in graph:
            _visit(graph, name, [])


def _visit(graph: dict[str, set[str]], name: str, trail: list[str]) -> None:
    if name in trail:
        raise AssertionError("import circle: " + " -> ".join(trail[trail.index(name) :] + [name]))
    for target in graph[name]:
        _visit(graph, target, trail + [name])


def test_no_module_over_400_lines():
    for package in ("serve_app", "deployments", "cli"):
        for name, path in modules(package).items():
            assert len(path.read_text().splitlines()) <= MAX_LINES, name
