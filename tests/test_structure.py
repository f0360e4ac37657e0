"""The code base's shape: short functions, and imports that flow one way
(commands -> config -> engine -> models / data)."""

import ast
from pathlib import Path

STRG = Path(__file__).resolve().parents[1] / "strg"
MAX_LINES = 80


def _modules():
    for path in sorted(STRG.rglob("*.py")):
        rel = path.relative_to(STRG.parent)
        name = ".".join(rel.with_suffix("").parts)
        yield name.removesuffix(".__init__"), rel, ast.parse(path.read_text(encoding="utf-8"))


def test_no_function_over_80_lines():
    long = []
    for _, rel, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1  # decorators not counted, docstring counted
                key = f"{rel.as_posix()}:{node.name}"
                if lines > MAX_LINES:
                    long.append(f"{key} ({lines} lines, line {node.lineno})")
    assert not long, "functions over 80 lines: " + ", ".join(long)


def _group(module: str) -> str:
    """strg.engine.trainer -> engine; strg.cli and strg.commands.* -> commands; strg.config -> config."""
    parts = module.split(".")
    if parts[0] != "strg" or len(parts) == 1:
        return ""
    return "commands" if parts[1] in ("cli", "commands") else parts[1]


def import_graph() -> dict[str, set[str]]:
    """group -> the strg groups its modules import (module level and inside functions)."""
    graph: dict[str, set[str]] = {}
    for name, _, tree in _modules():
        own = _group(name)
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module]
                if node.module == "strg":  # from strg import config: the submodules named
                    targets = [f"strg.{a.name}" for a in node.names
                               if (STRG / a.name).is_dir() or (STRG / f"{a.name}.py").is_file()]
            for target in targets:
                other = _group(target)
                if other and other != own:
                    graph.setdefault(own, set()).add(other)
    return graph


def test_imports_flow_one_way():
    graph = import_graph()
    assert not graph.get("config", set()) & {"engine", "models", "commands"}, graph.get("config")
    for lower in ("models", "data"):
        assert not graph.get(lower, set()) & {"engine", "config", "commands"}, (lower, graph.get(lower))
    assert "commands" not in graph.get("engine", set())


def test_no_import_cycle_between_config_engine_models_data():
    graph = import_graph()
    core = {"config", "engine", "models", "data"}

    def reaches(start, goal, seen=()):
        nexts = [n for n in graph.get(start, ()) if n in core]
        return any(n == goal or (n not in seen and reaches(n, goal, (*seen, n))) for n in nexts)

    assert not [g for g in core if reaches(g, g)], graph
