"""report.formatting: the leaf module of the report package's value formatting, and the
package's import graph (no cycles)."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pandas as pd

from scoresde.report.formatting import ci_text, fmt, is_none, missing, pm, with_ci

REPORT = Path(__file__).resolve().parents[1] / "src" / "scoresde" / "report"


def test_missing_and_none():
    assert all(map(missing, (None, math.nan, pd.NA)))
    assert not any(map(missing, (0, 0.0, "", [], (None,))))
    assert all(map(is_none, (None, "", " None ", "null")))
    assert not is_none("ald")


def test_numbers_show_the_digits_their_uncertainty_supports():
    assert fmt(math.nan) == "n/a" and fmt(12.3456) == "12.35"
    assert pm(1.2346, 0.012) == "1.235 ± 0.012"  # err's second significant digit: 3 decimals
    assert pm(123.4, 25.0) == "123 ± 25"
    assert pm(2.5, 0.0) == fmt(2.5) == "2.5"
    assert ci_text(0.1234, 0.2345) == "[0.12, 0.23]" and ci_text(math.nan, 1.0) == ""
    assert with_ci(0.17, 0.1234, 0.2345) == "0.17 [0.12, 0.23]"
    assert with_ci(0.17, None, None) == "0.17" and with_ci(None, 0, 1) == "n/a"


def imports(module: Path) -> set[str]:
    """The report modules `module` imports (at any depth of the file)."""
    names = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith("scoresde.report."):
                names.add(node.module.split(".")[2])
            elif node.module == "scoresde.report":
                names.update(a.name for a in node.names)
    return names & {p.stem for p in REPORT.glob("*.py")}


def test_the_report_package_has_no_import_cycle():
    graph = {p.stem: imports(p) for p in REPORT.glob("*.py") if p.stem != "__init__"}
    assert graph["formatting"] == set()  # a leaf

    def reaches(start: str, goal: str, seen: set) -> bool:
        for nxt in graph[start] - seen:
            seen.add(nxt)
            if nxt == goal or reaches(nxt, goal, seen):
                return True
        return False

    cycles = [m for m in graph if reaches(m, m, set())]
    assert not cycles, cycles
