"""Which figure answers which question, and what each one sees: the sweep's fidelity, diversity
and copying columns, the memorisation verdict, and the "what the metrics see" table built from
the check-metrics stage's JSON (held-out images as they are and with known defects)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from scoresde.report.formatting import missing, with_ci

# (column of the results, heading, question it answers); FID / KID are the sweep's own columns
FIGURES = (
    ("precision", "precision", "fidelity: share of samples that look like real images"),
    ("recall", "recall", "diversity: share of real images the samples reach"),
    ("density", "density", "fidelity, robust to outliers (about 1 for real images)"),
    ("coverage", "coverage", "diversity, robust to outliers: share of real modes hit"),
    ("memorised", "memorised", "copying: share of samples that are near-copies of training images"),
)
CHECK_COLUMNS = ("fid", "kid", *(key for key, _, _ in FIGURES))
QUESTIONS_TEXT = (
    "Which figure answers which question: FID and KID compare the whole feature distributions "
    "(fidelity and diversity mixed in one number); precision and density measure fidelity, "
    "recall and coverage diversity (Kynkäänniemi et al. 2019, Naeem et al. 2020; k = 5 nearest "
    "neighbours); memorised is the share of samples closer to a training image than a third of "
    "the held-out test images' median distance (after Meehan et al. 2020: held-out images score "
    "about 0, copies 1). Lower is better for FID, KID and memorised, higher for the others.")


def figure_cell(r: dict, key: str) -> str:
    """``value [lo, hi]`` of one figure of a results row, n/a when the row lacks it."""
    value = r.get(key)
    if missing(value):
        return "n/a"
    return with_ci(float(value), r.get(f"{key}_ci_low"), r.get(f"{key}_ci_high"))


def sweep_columns(r: dict) -> dict:
    """The sweep table's columns of the new figures for one case."""
    return {heading: figure_cell(r, key) for key, heading, _ in FIGURES}


def _interval(r: dict, key: str) -> tuple[float, float]:
    lo, hi = r.get(f"{key}_ci_low"), r.get(f"{key}_ci_high")
    if missing(lo) or missing(hi):
        return math.nan, math.nan
    return float(lo), float(hi)


def seen_by(row: dict, clean: dict) -> list[str]:
    """The figures whose interval lies apart from the held-out images' interval."""
    out = []
    for key in CHECK_COLUMNS:
        (lo, hi), (clo, chi) = _interval(row, key), _interval(clean, key)
        if not any(map(math.isnan, (lo, hi, clo, chi))) and (lo > chi or hi < clo):
            out.append(key)
    return out


def checks_table(path) -> tuple[pd.DataFrame, dict]:
    """The "what the metrics see" table of a metric_checks.json, and the file's header."""
    result = json.loads(Path(path).read_text())
    rows, clean = result["rows"], result["rows"][0]
    table = [{
        "images": r["images"], f"speckled (TV > {result.get('speckle_tv', 0.25)})": f"{r['speckled']:.0%}",
        **{key.upper() if key in ("fid", "kid") else key: figure_cell(r, key) for key in CHECK_COLUMNS},
        "FID / held-out": f"{r['fid'] / clean['fid']:.1f}x" if clean["fid"] > 0 else "n/a",
        "seen by (interval apart from held-out)": ", ".join(seen_by(r, clean)) or "none",
    } for r in rows]  # fmt: skip
    table[0]["seen by (interval apart from held-out)"] = "(the baseline)"
    return pd.DataFrame(table), result
