"""The package's import graph: no cycle between modules, and rooms import only downwards.

The order (docs/internals.md): the shared vocabulary at the root, then authoring, engine,
runs, views, operations, then the client and the two front ends. ``plankton`` never imports
the process programs (``workers``, ``scheduler``), and the counter schema the Lua is built
from imports neither prometheus-client nor the authoring layer.

Module-level imports only (those inside ``if TYPE_CHECKING:`` count too; imports inside
functions are deliberate deferrals and do not).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "plankton"

#: Rooms from the bottom up; a module may import its own room and the rooms before it.
ROOMS = [
    "shared",
    "plankton.authoring",
    "plankton.engine",
    "plankton.runs",
    "plankton.views",
    "plankton.operations",
    "plankton.client",
    "front",
]
SHARED = {
    "plankton.errors",
    "plankton.states",
    "plankton.keys",
    "plankton.codec",
    "plankton.settings",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _module_level(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []

    def walk(node: ast.AST) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, (ast.If, ast.Try)):
            for child in ast.iter_child_nodes(node):
                walk(child)

    for node in tree.body:
        walk(node)
    return found


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """What ``path`` imports at module level: a module for ``from pkg import module``, the
    module itself for ``from module import name``; every name, known module or not."""
    out: set[str] = set()
    for node in _module_level(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
            continue
        assert node.level == 0, f"{path}: relative import (the tree uses absolute ones)"
        base = node.module or ""
        for alias in node.names:
            full = f"{base}.{alias.name}"
            out.add(full if full in modules else base)
    return out


def graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in PKG.rglob("*.py")}
    names = set(paths)
    return {m: imports_of(p, names) for m, p in paths.items()}


def room(module: str) -> int:
    if module in SHARED:
        return 0
    if module.startswith(("plankton.cli", "plankton.api")) or module == "plankton":
        return len(ROOMS) - 1
    for i, prefix in enumerate(ROOMS):
        if module == prefix or module.startswith(prefix + "."):
            return i
    raise AssertionError(f"{module} is in no room: add it to ROOMS or SHARED")


def test_no_import_cycle_between_modules():
    deps = graph()
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for d in sorted(deps.get(m, ())):
            if d not in deps or d == "plankton":
                continue  # third party, or the package facade (``from plankton import x``)
            if state.get(d) == 1:
                cycle = path[path.index(d) :] + [d]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if d not in state:
                visit(d)
        path.pop()
        state[m] = 2

    for m in sorted(deps):
        if m not in state:
            visit(m)


def test_rooms_import_only_downwards():
    deps = graph()
    bad = [
        f"{m} ({ROOMS[room(m)]}) imports {d} ({ROOMS[room(d)]})"
        for m, ds in deps.items()
        for d in ds
        if d.startswith("plankton.") and d in deps and room(d) > room(m)
    ]
    assert not bad, "\n".join(sorted(bad))


def test_the_library_never_imports_the_process_programs():
    for m, ds in graph().items():
        assert not {d for d in ds if d.split(".")[0] in ("workers", "scheduler")}, m


def test_the_counter_schema_imports_neither_prometheus_nor_authoring():
    deps = graph()
    seen, todo = set(), ["plankton.engine.counters", "plankton.engine.scripts"]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        for d in deps.get(m, ()):
            assert not d.startswith("prometheus_client"), f"{m} imports {d}"
            assert not d.startswith("plankton.authoring"), f"{m} imports {d}"
            if d in deps and d != "plankton":
                todo.append(d)
