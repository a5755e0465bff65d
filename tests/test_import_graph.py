"""The package's import graph, counting imports inside functions too: no module reaches itself
(shared names live in leaf modules such as stages/masks.py and stages/exits.py), and no stage
imports the command line."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(p): p for p in (SRC / "scoresde").rglob("*.py")}


def _imports(module: str) -> set[str]:
    """The package's modules `module` imports (at any depth of its file)."""
    path = MODULES[module]
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in MODULES else target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return (found & MODULES.keys()) - {module}


GRAPH = {m: _imports(m) for m in MODULES}


def _reaches(start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        for nxt in GRAPH[todo.pop()] - seen:
            if nxt == goal:
                return True
            seen.add(nxt)
            todo.append(nxt)
    return False


def test_the_graph_sees_imports_inside_functions():
    assert "scoresde.stages.masks" in GRAPH["scoresde.stages.inputs"]  # a function-level import
    assert "scoresde.stages.exits" in GRAPH["scoresde.cli"]


def test_no_module_imports_itself_through_others():
    cycles = sorted(m for m in GRAPH if _reaches(m, m))
    assert not cycles, cycles


def test_no_stage_imports_the_command_line():
    stages = [m for m in GRAPH if m.startswith("scoresde.stages")]
    assert not [m for m in stages if any(d.startswith("scoresde.cli") for d in GRAPH[m])]
