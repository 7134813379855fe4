"""The modules of the project's packages import each other without a circle.

The graph is read statically with ``ast``: every ``import`` and ``from … import`` counts, at module level or inside a
function, so a function-local import that only hides a circle at run time still shows here. An edge goes to the most
specific module the statement names (``from workers.services import jobs`` → ``workers.services.jobs``;
``from workers.services.jobs import job_create`` → ``workers.services.jobs``); the package ``__init__`` modules a
Python import also runs on the way are not edges, or every package that re-exports its submodules would be a circle.
Run as a script (``python tests/workers/test_import_graph.py``) it prints the circles it finds.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("annotate", "workers", "config", "alignment", "studies")


def module_files(root: Path = ROOT, packages=PACKAGES) -> dict[str, Path]:
    """Module name → file, for every ``.py`` file of ``packages`` (migrations included: they import too)."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of the dotted ``name`` that is one of ``modules``."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules that ``module`` imports anywhere in its file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names = [f"{base}.{alias.name}" for alias in node.names if alias.name != "*"] or [base]
        else:
            continue
        for name in names:
            target = _resolve(name, modules)
            if target is not None and target != module:
                targets.add(target)
    return targets


def import_graph(root: Path = ROOT, packages=PACKAGES) -> dict[str, set[str]]:
    modules = module_files(root, packages)
    return {module: imports_of(module, path, modules) for module, path in modules.items()}


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with two or more modules: each one holds at least one circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph) + 1000))

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph.get(node, ())):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(components)


def one_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A shortest circle through the component's first module: the modules it passes, the first repeated last."""
    members = set(component)
    start = component[0]
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for successor in sorted(graph[node] & members):
                if successor == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if successor not in previous:
                    previous[successor] = node
                    following.append(successor)
        frontier = following
    return component


def cycle_report(graph: dict[str, set[str]]) -> str:
    lines = []
    for component in strongly_connected(graph):
        lines.append(f"{len(component)} modules import each other: {', '.join(component)}")
        lines.append("  e.g. " + " → ".join(one_cycle(graph, component)))
    return "\n".join(lines)


def test_the_graph_sees_function_local_and_relative_imports():
    graph = import_graph()
    assert "workers.celery" in graph["workers"]  # ``from .celery import app`` in a package's __init__
    assert "workers.models" in graph["workers.services.jobs"]
    assert graph["alignment.labels"] <= {module for module in graph if module.startswith("alignment")}


def test_a_circle_is_found_and_reported(tmp_path):
    package = tmp_path / "loop"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from loop.b import thing\n")
    (package / "b.py").write_text("def thing():\n    from loop import c\n")
    (package / "c.py").write_text("from . import a\n")
    graph = import_graph(tmp_path, ("loop",))
    assert strongly_connected(graph) == [["loop.a", "loop.b", "loop.c"]]
    assert "loop.a → loop.b → loop.c → loop.a" in cycle_report(graph)


def test_no_import_circle_among_the_project_modules():
    report = cycle_report(import_graph())
    assert not report, f"import circles:\n{report}"


if __name__ == "__main__":
    found = cycle_report(import_graph())
    print(found or "no import circle")
    sys.exit(1 if found else 0)
