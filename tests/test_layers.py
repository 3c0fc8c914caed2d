"""The house, drawn from its imports: data flows one way (data -> models -> ops/optim -> engine ->
bench), no package imports one above it, and the library's subpackages form no circle."""

from __future__ import annotations

import ast
import os
from collections import defaultdict

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "glad")


def _graph() -> dict[str, set[str]]:
    """Subpackage -> the glad subpackages it imports (module level and inside functions alike)."""
    graph = defaultdict(set)
    for folder, _, files in os.walk(ROOT):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            parts = ["glad", *os.path.relpath(path, ROOT)[:-3].split(os.sep)]
            own = parts[1]  # the subpackage, or a top-level module
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read())
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    targets = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom):
                    base = parts[:len(parts) - node.level] if node.level else []
                    targets = [".".join(base + ([node.module] if node.module else []))]
                else:
                    continue
                for target in targets:
                    pieces = target.split(".")
                    if pieces[0] == "glad" and len(pieces) > 1 and pieces[1] not in (own, "_C", "__init__"):
                        graph[own].add(pieces[1])
    return graph


def test_no_circle_between_subpackages():
    graph = _graph()

    def reaches(start, goal, seen=()):
        return any(n == goal or (n not in seen and reaches(n, goal, (*seen, n))) for n in graph.get(start, ()))

    circles = sorted(p for p in graph if reaches(p, p))
    assert circles == [], {p: sorted(graph[p]) for p in circles}


def test_data_imports_nothing_above_it():
    assert _graph()["data"] <= {"io", "config", "protocols", "providers"}  # the torch-free layer beneath


def test_only_the_benchmarks_sit_above_the_engine():
    graph = _graph()
    assert [p for p, deps in graph.items() if "engine" in deps] == ["bench"]
    assert [p for p, deps in graph.items() if "bench" in deps] == []
    for below in ("data", "models", "ops", "optim"):
        assert "world" not in graph[below] or below == "models", below  # glad-tiny, imported by name
