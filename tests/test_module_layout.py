"""The layout: the tools (dlq, demo) sit on top of the core, no imports go in a circle, and the maps of the
modules (exporter/__init__.py, the README, tests/support/__init__.py) name every module."""

from __future__ import annotations

import ast
import re
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


def top_level_modules() -> set[str]:
    """Every module and subpackage directly in exporter/, by the name it is imported under."""
    modules = {path.stem for path in PACKAGE.glob("*.py") if path.stem != "__init__"}
    return modules | {path.parent.name for path in PACKAGE.glob("*/__init__.py")}


def test_the_package_docstring_maps_every_module():
    docstring = ast.get_docstring(ast.parse((PACKAGE / "__init__.py").read_text(encoding="utf-8"))) or ""
    named = set(re.findall(r"``(\w+)``", docstring))
    assert top_level_modules() - named == set(), "exporter/__init__.py's map misses these modules"
    assert named - top_level_modules() == set(), "exporter/__init__.py's map names modules that are gone"


def test_the_readme_layout_names_every_module():
    readme = (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
    layout = readme.split("## Layout", 1)[1].split("\ndashboards/", 1)[0]  # the exporter/ block
    files = set(re.findall(r"\b(\w+)\.py\b", layout)) - {"__init__"}
    named = files | set(re.findall(r"\b(\w+)/", layout))
    assert top_level_modules() - named == set(), "the README's Layout section misses these modules"
    assert files - top_level_modules() == set(), "the README's Layout section names modules that are gone"


def test_the_test_support_index_names_every_helper_module():
    support = PACKAGE.parent / "tests" / "support"
    index = ast.get_docstring(ast.parse((support / "__init__.py").read_text(encoding="utf-8"))) or ""
    modules = {path.stem for path in support.glob("*.py") if path.stem != "__init__"}
    assert modules - set(re.findall(r"``(\w+)``", index)) == set(), "tests/support/__init__.py misses these"
    for path in support.glob("*.py"):
        docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        assert docstring, f"tests/support/{path.name} does not say what it holds"
