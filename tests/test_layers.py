"""The layers hold: import-linter's contracts (pyproject.toml) and no import cycle.

Both checks read every import statement of the package, those inside functions included (grimp
parses the source), so a function-level import cannot hide an import that points up the layers
or closes a cycle.
"""

from __future__ import annotations

from pathlib import Path

import grimp
from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[1]


def test_import_linter_contracts_are_kept(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True) == 0


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's strongly connected components with more than one module (the cycles)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph.get(node, ()):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_import_cycle():
    graph = grimp.build_graph("lt_ray", cache_dir=None)
    # a package's __init__ re-exports its own modules: an edge into the package from one of its
    # modules would be a cycle, an edge from the package to its modules is its face
    edges = {m: {d for d in graph.find_modules_directly_imported_by(m)
                 if not m.startswith(f"{d}.") and not d.startswith(f"{m}.")}
             for m in graph.modules}
    assert strongly_connected(edges) == []


def test_strongly_connected_finds_a_cycle():
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
