"""The package rules docs/ARCHITECTURE.md states: serve_app knows nothing of Ray, has no import
circle, and no module grows past 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MAX_LINES = 400


def modules(package: str) -> dict[str, Path]:
    root = REPO / package
    return {
        ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): path
        for path in root.rglob("*.py")
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


def test_serve_app_imports_neither_ray_serve_nor_deployments():
    for name, path in modules("serve_app").items():
        bad = {m for m in imports(path) if m.split(".")[0] in ("ray", "deployments")}
        assert not bad, (name, bad)


def test_serve_app_has_no_import_circle():
    mods = modules("serve_app")
    graph = {name: {m for m in imports(path) if m in mods and m != name} for name, path in mods.items()}

    def visit(name: str, trail: list[str]) -> None:
        if name in trail:
            raise AssertionError("import circle: " + " -> ".join(trail[trail.index(name) :] + [name]))
        for target in graph[name]:
            visit(target, trail + [name])

    for name in graph:
        visit(name, [])


def test_the_http_layer_does_not_import_the_engine():
    for name, path in modules("serve_app").items():
        if name.startswith("serve_app.api"):
            assert not {m for m in imports(path) if m.startswith("serve_app.engine")}, name


def test_no_module_over_400_lines():
    for package in ("serve_app", "deployments"):
        for name, path in modules(package).items():
            assert len(path.read_text().splitlines()) <= MAX_LINES, name
