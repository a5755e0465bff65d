"""The report's tables as DataFrames, and their cells prepared for the HTML template.

Every FID is shown with its bootstrap interval and every bits/dim with its standard error and
interval, at the report's confidence level.
"""

from __future__ import annotations

import pandas as pd

from scoresde.report.figures_of_merit import sweep_columns
from scoresde.report.formatting import cell, ci_text, fmt, missing, pm, with_ci
from scoresde.report.orderings import VERDICT_TEXT
from scoresde.report.paper import PAPER_TAG, paper_bpd, paper_fid
from scoresde.report.uncertainty import bpd_interval, fid_interval, seed_count

VERDICT_CLASS = {"held": "held", "not held": "failed", "undecided": "undecided"}


def fid_with_interval(r: dict, confidence: float) -> str:
    """``FID [lo, hi]`` (decimals from the interval's width), or the FID alone without one."""
    return with_ci(r["fid"], *fid_interval(r, confidence))


def fid_column(confidence: float) -> str:
    return f"FID [{confidence:.0%} interval]"


def sweep_table(fid: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """The sampler sweep with the paper's Table 1 FID where the same case exists."""
    rows, means = [], several_seeds(fid)
    for r in fid.to_dict("records"):
        paper = paper_fid(r)
        rows.append({
            "dataset": r["dataset"], "SDE": r["sde"], "sampler": r["sampler"],
            "predictor": r["predictor"], "corrector": r["corrector"],
            "steps": "adaptive" if missing(r["steps"]) else int(r["steps"]),
            "Tweedie denoising": "yes" if r["denoise"] else "no", "NFE": fmt(r["nfe"]),
            fid_column(confidence): fid_with_interval(r, confidence),
            "KID (mean ± s.d.)": pm(r["kid"], r["kid_std"]),
            **sweep_columns(r),
            "samples": samples_text(r), "sampling time (s)": fmt(r["seconds"]),
            "feature extractor": r["feature_extractor"],
            f"FID ({PAPER_TAG})": f"{paper[0]} ({paper[1]})" if paper else "",
        })  # fmt: skip
        if means:  # report.seeds > 1: the FID is a mean, show the seeds' spread
            rows[-1][fid_column(confidence)] += " (mean)"
            rows[-1]["FID s.d. over seeds"] = fmt(r.get("fid_seed_sd"))
    return pd.DataFrame(rows)


def several_seeds(fid: pd.DataFrame) -> bool:
    return "seeds" in fid and bool((fid["seeds"].fillna(1) > 1).any())


def samples_text(r: dict) -> str:
    """``n`` or, for a mean over seeds, ``n x k seeds``."""
    seeds = seed_count(r)
    return cell(r["n_samples"]) if seeds == 1 else f"{cell(r['n_samples'])} x {seeds} seeds"


def likelihood_table(nll: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Bits/dim per (dataset, SDE) with the paper's Table 2 value for the same SDE."""
    rows = []
    for r in nll.to_dict("records"):
        paper = paper_bpd(r["sde"])
        rows.append({
            "dataset": r["dataset"], "SDE": r["sde"],
            "bits/dim (± s.e.)": pm(r["bpd"], r["bpd_sem"]),
            f"{confidence:.0%} interval": ci_text(*bpd_interval(r, confidence)),
            "NFE": fmt(r["nfe"]), "test images": cell(r["n_images"]),
            "divergence estimate": cell(r["divergence"]),
            f"bits/dim ({PAPER_TAG})": f"{paper[0]} ({paper[1]})" if paper else "",
        })  # fmt: skip
    return pd.DataFrame(rows)


def orderings_table(orderings) -> pd.DataFrame:
    rows = [(s, VERDICT_TEXT[v], e) for s, v, e in orderings]
    return pd.DataFrame(rows, columns=["ordering", "verdict", "evidence"])


def kv_table(d: dict) -> pd.DataFrame:
    return pd.DataFrame({"key": list(d), "value": list(d.values())})


def html_cells(df: pd.DataFrame) -> dict:
    """``{"head": [(text, class)], "rows": [[{"lines", "cls", "fold"}]]}`` for the template.

    The paper's columns are shaded, verdicts coloured, short cells kept on one line; a cell of
    more than four lines shows its first line and folds the rest (a long list of evidence).
    """

    def cls(col, value=None) -> str:
        names = ["paper"] if "paper" in str(col) else []
        if col == "verdict" and value in VERDICT_CLASS:
            names.append(VERDICT_CLASS[value])
        if value is not None and len(value) <= 24:
            names.append("nw")
        return " ".join(names)

    head = [(str(c), cls(c)) for c in df.columns]
    rows = []
    for row in df.itertuples(index=False):
        cells = []
        for c, v in zip(df.columns, row, strict=True):
            lines = cell(v).split("\n")
            cells.append({"lines": lines, "cls": cls(c, cell(v)), "fold": len(lines) > 4})
        rows.append(cells)
    return {"head": head, "rows": rows}


def md_table(df: pd.DataFrame) -> str:
    def esc(v):
        return cell(v).replace("|", "\\|").replace("\n", "<br>")

    lines = ["| " + " | ".join(esc(c) for c in df.columns) + " |"]
    lines.append("|" + "---|" * len(df.columns))
    lines += ["| " + " | ".join(esc(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)
