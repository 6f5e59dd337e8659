"""The layout shows the architecture: release/ by concern, no import circles, gemma_ref never imports release."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _modules(package: str) -> dict[str, set[str]]:
    """module -> the modules of this project it imports (anywhere in the file, lazy imports included)."""
    files = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
             for p in (ROOT / package).rglob("*.py")}
    known = set(files) | {m for m in files if m.endswith("__init__")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                deps.add(node.module)
                deps.update(f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in known)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
        graph[name] = {d for d in deps if d in known and d != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for d in sorted(graph.get(n, ())):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state and (c := visit(d)):
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (c := visit(n)):
            return c
    return None


def test_release_has_no_import_circles():
    graph = _modules("release")
    assert "release.card.rules" in graph and "release.weights.golden" in graph  # the walk sees the package
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_gemma_ref_stays_free_of_release_and_heavy_imports():
    for path in (ROOT / "gemma_ref").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for n in names:
                top = n.split(".")[0]
                assert top not in ("release", "torch", "transformers", "gguf", "yaml", "typer", "huggingface_hub"), f"{path.name} imports {n}"


def test_concerns_depend_downwards_only():
    """weights/ and card/ never import publishing; the shared plumbing imports none of the three concerns."""
    graph = _modules("release")
    for mod, deps in graph.items():
        if mod.startswith(("release.weights", "release.card")):
            assert not any(d.startswith("release.publish") for d in deps), (mod, deps)
        if mod in ("release.errors", "release.findings", "release.files", "release.resources", "release.safeyaml"):
            assert not any(d.startswith(("release.weights", "release.card", "release.publish")) for d in deps), (mod, deps)
