"""Formatting of report values: what counts as missing, numbers to a few significant digits,
``x ± err`` and ``x [lo, hi]`` to the decimals their uncertainty shows. A leaf module: the
report's loaders, seed merging and uncertainty all import from here, nothing here imports them.
"""

from __future__ import annotations

import math

import pandas as pd


def missing(value) -> bool:
    if isinstance(value, (list, tuple)):
        return False
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def is_none(name) -> bool:
    return missing(name) or str(name).strip().lower() in ("", "none", "null")


def fmt(x) -> str:
    return "n/a" if missing(x) else f"{x:.4g}"


def pm(x, err) -> str:
    """``x ± err``, both to the decimals of err's second significant digit."""
    if missing(x) or missing(err) or not err > 0:
        return fmt(x)
    decimals = max(0, 1 - math.floor(math.log10(err)))
    return f"{x:.{decimals}f} ± {err:.{decimals}f}"


def cell(v) -> str:
    return "" if missing(v) else str(v)


def decimals(lo, hi) -> int:
    """Decimals that show an interval's width to two significant digits."""
    width = abs(hi - lo)
    return max(0, 1 - math.floor(math.log10(width))) if width > 0 else 3


def ci_text(lo, hi) -> str:
    """``[lo, hi]`` with the decimals of :func:`decimals`, or "" without an interval."""
    if missing(lo) or missing(hi):
        return ""
    n = decimals(lo, hi)
    return f"[{lo:.{n}f}, {hi:.{n}f}]"


def with_ci(x, lo, hi) -> str:
    """``x [lo, hi]``, all to the same decimals; ``x`` alone (4 significant digits) without."""
    if missing(x):
        return "n/a"
    if missing(lo) or missing(hi):
        return f"{x:.4g}"
    n = decimals(lo, hi)
    return f"{x:.{n}f} [{lo:.{n}f}, {hi:.{n}f}]"
