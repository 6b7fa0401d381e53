"""The code's shape, checked: no import cycles in the core and adapters, no private names crossing modules.

A cycle means a shared helper lives in whichever module first needed it, and a lazy import hides it
until something breaks at run time; a private name imported elsewhere is an interface nobody owns.
Lazy (function-level) imports count: they are still dependencies.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("include", "plugins", "dags", "tools", "bench", "tests")


def module_name(path: Path) -> str:
    """The dotted name a file is imported as (``plugins/`` is on the path itself)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] == "plugins":
        parts = parts[1:]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    """Every Python module of the project, by dotted name."""
    return {
        module_name(p): p for top in SOURCES for p in (ROOT / top).rglob("*.py") if ".venv" not in p.parts
    }


def imports_of(path: Path, modules: dict[str, Path]) -> list[tuple[int, str, str | None]]:
    """(line, imported module, imported name or None) for each import of a project module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                if f"{node.module}.{alias.name}" in modules:
                    found.append((node.lineno, f"{node.module}.{alias.name}", None))
                elif node.module in modules:
                    found.append((node.lineno, node.module, alias.name))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name, None) for a in node.names if a.name in modules]
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def dependency_graph(prefixes: tuple[str, ...]) -> dict[str, set[str]]:
    """Module -> project modules it imports, for the modules under ``prefixes``."""
    modules = project_modules()
    graph = {name: set() for name in modules if name.startswith(prefixes)}
    for name in graph:
        for _, target, _ in imports_of(modules[name], modules):
            if target in graph and target != name:
                graph[name].add(target)
    return graph


@pytest.mark.parametrize("prefixes", [("include.mlops",), ("include.mlops", "mlops_airflow")])
def test_no_import_cycles(prefixes):
    found = cycles(dependency_graph(prefixes))
    assert not found, "import cycles (move the shared thing to where it belongs):\n" + "\n".join(
        " -> ".join(c) for c in found
    )


def test_no_private_names_cross_modules():
    modules = project_modules()
    crossing = [
        f"{path.relative_to(ROOT)}:{line} imports {target}.{name}"
        for importer, path in modules.items()
        for line, target, name in imports_of(path, modules)
        if name and name.startswith("_") and not name.startswith("__") and target != importer
    ]
    assert not crossing, "private names imported across modules (make them public):\n" + "\n".join(crossing)


def test_the_cycle_check_sees_a_cycle():
    """The checks above can fail: a made-up graph with a lazy back-edge is reported."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_every_core_module_says_its_job():
    """Each core module opens with a one-line docstring: the module map in docs/architecture.md uses it."""
    missing = [
        str(path.relative_to(ROOT))
        for name, path in project_modules().items()
        if name.startswith("include.mlops")
        and path.name != "__main__.py"
        and not (ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or "").strip()
    ]
    assert not missing, f"core modules without a docstring: {missing}"


def test_the_module_map_names_every_module():
    """docs/architecture.md's module map lists every core and adapter module, and only existing ones."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    mapped = set(re.findall(r"`((?:include/mlops|plugins/mlops_airflow)/[\w/]+\.py)`", text))
    present = {
        str(p.relative_to(ROOT))
        for top in ("include/mlops", "plugins/mlops_airflow")
        for p in (ROOT / top).rglob("*.py")
    }
    assert not present - mapped, f"modules missing from the module map: {sorted(present - mapped)}"
    assert not mapped - present, f"the module map names modules that do not exist: {sorted(mapped - present)}"
