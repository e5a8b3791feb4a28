"""The import structure: the tools (dlq, demo) sit on top of the core, and no imports go in a circle."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "exporter"
TOOLS = ("exporter.dlq", "exporter.demo")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Every exporter module -> the exporter modules it imports (anywhere in it, lazily or not)."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)  # may name a module
        graph[module_name(path)] = found
    return {module: {name for name in found if name in graph} for module, found in graph.items()}


def belongs_to(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_core_never_imports_a_tool_and_tools_never_import_each_other_or_the_cli():
    graph = imports()
    assert "exporter.dlq.command" in graph
    for module, imported in graph.items():
        tool = next((tool for tool in TOOLS if belongs_to(module, tool)), None)
        for name in imported:
            target = next((other for other in TOOLS if belongs_to(name, other)), None)
            assert target in (None, tool), f"{module} imports {name}"
            if tool is not None:
                assert name != "exporter.cli", f"{module} imports the command line it is registered by"


def test_no_import_cycles():
    graph = imports()
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for name in sorted(graph.get(module, ())):
            assert state.get(name) != "open", " -> ".join([*path, module, name])
            if name not in state:
                visit(name, [*path, module])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
