"""The import graph of ``common/`` and ``apps/``, read with ``ast`` (imports inside functions count too): no cycles,
no app importing another app, no shared module importing an app or the test kit, and ``common``'s foundation
modules only import the layers below them.

Imports under ``if TYPE_CHECKING:`` are left out (they never run). An import names the module it loads:
``from common import monitoring`` is an edge to ``common.monitoring``, ``from common.data import DataError`` an edge
to ``common.data``.
"""

from __future__ import annotations

import ast
import fnmatch
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ROOTS = ("common", "apps")
# common's lowest layers, bottom up: each may import only the modules listed for it (within common)
FOUNDATION: dict[str, set[str]] = {
    "common.errors": set(),
    "common.config": {"common.errors"},
    "common.data": {"common.errors", "common.config"},
}
TEST_KIT = "mlref_testing"
# benchmarks (bench, serving_bench) drive a service with the probe kit's load client; no service, CLI or library
# module imports them at import time (an app's `bench` command imports its bench module inside the command)
TEST_KIT_USERS = ("apps.*.bench", "apps.*.serving_bench")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for root in ROOTS:
        for path in sorted((REPO / root).rglob("*.py")):
            modules[module_name(path)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement in ``node``, at any depth, except those under ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.orelse:
                yield from _import_nodes(ast.Module(body=[stmt], type_ignores=[]))
            continue
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child
        yield from _import_nodes(child)


def _known_prefix(name: str, modules: dict[str, Path]) -> str | None:
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in modules:
            return candidate
    return None


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules under ROOTS (and the test kit, by name) that module ``name`` imports."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, base] if base else package)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        for target in targets:
            if target == TEST_KIT or target.startswith(TEST_KIT + "."):
                found.add(target)
                continue
            known = _known_prefix(target, modules)
            if known is not None and known != name:
                found.add(known)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_the_graph_sees_imports_inside_functions(graph: dict[str, set[str]]) -> None:
    # common.cli imports common.models inside create_app only; a checker blind to function bodies misses it
    assert "common.models" in graph["common.cli"]
    assert "common.errors" in graph["common.data"]


def test_no_import_cycles(graph: dict[str, set[str]]) -> None:
    assert cycles(graph) == []


def test_cycle_finder_finds_a_cycle_through_function_level_imports(tmp_path: Path) -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_apps_import_no_other_app(graph: dict[str, set[str]]) -> None:
    crossing = []
    for name, targets in graph.items():
        if name.startswith("apps."):
            app = name.split(".")[1]
            crossing += [f"{name} -> {t}" for t in targets if t.startswith("apps.") and t.split(".")[1] != app]
    assert crossing == []


def test_common_imports_no_app_and_production_code_no_test_kit(graph: dict[str, set[str]]) -> None:
    bad = [
        f"{name} -> {t}"
        for name, targets in graph.items()
        for t in targets
        if (name.startswith("common") and t.startswith("apps."))
        or (t.split(".")[0] == TEST_KIT and not any(fnmatch.fnmatch(name, p) for p in TEST_KIT_USERS))
    ]
    assert bad == []


def test_the_test_kit_is_not_reachable_from_a_service_or_the_library(graph: dict[str, set[str]]) -> None:
    """What ``apps.<app>.service`` (and so ``serve``) and every ``common`` module load never includes the kit."""
    roots = [m for m in graph if m.startswith("common") or m.endswith(".service")]
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        m = stack.pop()
        if m in seen:
            continue
        seen.add(m)
        stack += [t for t in graph.get(m, ()) if t not in seen]
    assert not [m for m in seen if m.split(".")[0] == TEST_KIT or any(fnmatch.fnmatch(m, p) for p in TEST_KIT_USERS)]


def test_foundation_layers_import_only_lower_layers(graph: dict[str, set[str]]) -> None:
    for name, allowed in FOUNDATION.items():
        inside = {t for t in graph[name] if t.split(".")[0] == "common"}
        assert inside <= allowed, f"{name} imports {sorted(inside - allowed)}"
