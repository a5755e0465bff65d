"""The likelihood table: every bound on log P(k) per SDE (docs/likelihood.md).

Each likelihood JSON holds the paper's uniform bound at its top level and, under ``bounds``, one
entry per method (uniform, importance, truncated-normal) with its per-image bits/dim. A row per
(dataset, SDE, method) gets the normal interval over test images and the paired difference to
``uniform`` over the same images (d_i = bpd_i(method) - bpd_i(uniform)) with its interval.
A JSON without ``bounds`` (written before them) is one ``uniform`` row.
"""

from __future__ import annotations

import math

import pandas as pd

from scoresde.report.formatting import ci_text, fmt, missing, pm, with_ci
from scoresde.report.load import NLL_COLUMNS, sde_key, sde_label
from scoresde.report.paper import PAPER_TAG, paper_bpd
from scoresde.report.uncertainty import bpd_difference, bpd_interval

METHOD_ORDER = ("uniform", "importance", "truncated-normal")
METHOD_LABEL = {
    "uniform": "uniform (paper)", "importance": "importance-weighted",
    "truncated-normal": "truncated normal (i-DODE)",
}  # fmt: skip
BOUND_COLUMNS = [
    "method", "samples", "bpd_ci_low", "bpd_ci_high", "diff_to_uniform", "diff_ci_low",
    "diff_ci_high", "seconds", "t0", "tau",
]  # fmt: skip
# reports/likelihood.csv: the columns of a per-SDE row first, then the method's
LIKELIHOOD_COLUMNS = [*NLL_COLUMNS, *BOUND_COLUMNS]


def _bounds_of(r: dict) -> list[dict]:
    bounds = r.get("bounds")
    if isinstance(bounds, list) and bounds:
        return bounds
    return [{"method": "uniform", "bpd": r["bpd"], "bpd_sem": r["bpd_sem"], "nfe": r["nfe"],
             "bpd_per_image": r.get("bpd_per_image")}]  # fmt: skip


def method_key(method) -> tuple:
    return (METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), str(method))


def bound_rows(nll: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """One row per (dataset, SDE, method), columns LIKELIHOOD_COLUMNS, in the paper's SDE order."""
    rows = []
    for r in nll.to_dict("records"):
        bounds = _bounds_of(r)
        uniform = next((b for b in bounds if b.get("method") == "uniform"), None)
        for b in bounds:
            row = {c: r.get(c) for c in NLL_COLUMNS}
            row.update({c: b.get(c) for c in ("method", "bpd", "bpd_sem", "nfe", "samples", "seconds",
                                              "t0", "tau")})  # fmt: skip
            row["bpd_ci_low"], row["bpd_ci_high"] = bpd_interval(b, confidence)
            if uniform is not None and b is not uniform and not missing(b.get("bpd")):
                cmp = bpd_difference(b, uniform, confidence)
                row.update(diff_to_uniform=cmp["d"], diff_ci_low=cmp["lo"], diff_ci_high=cmp["hi"])
            rows.append(row)
    df = pd.DataFrame(rows, columns=LIKELIHOOD_COLUMNS)
    if not len(df):
        return df
    order = sorted(range(len(df)), key=lambda i: (str(df["dataset"][i]), sde_key(df["sde"][i]),
                                                  method_key(df["method"][i])))  # fmt: skip
    return df.iloc[order].reset_index(drop=True)


def bounds_table(rows: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """The report's likelihood table: every bound, its interval, the paired difference to the
    uniform bound, NFE and seconds, and the paper's Table 2 value beside the uniform one."""
    out = []
    for r in rows.to_dict("records"):
        paper = paper_bpd(r["sde"]) if r["method"] == "uniform" else None
        diff = "" if missing(r["diff_to_uniform"]) else with_ci(r["diff_to_uniform"], r["diff_ci_low"],
                                                                  r["diff_ci_high"])  # fmt: skip
        out.append({
            "dataset": r["dataset"], "SDE": r["sde"], "bound": _label(r),
            "bits/dim (± s.e.)": pm(r["bpd"], r["bpd_sem"]),
            f"{confidence:.0%} interval": ci_text(r["bpd_ci_low"], r["bpd_ci_high"]),
            f"minus uniform, paired [{confidence:.0%}]": diff,
            "draws": "" if missing(r["samples"]) else int(r["samples"]), "NFE": fmt(r["nfe"]),
            "seconds": fmt(r["seconds"]), "test images": "" if missing(r["n_images"]) else int(r["n_images"]),
            f"bits/dim ({PAPER_TAG})": f"{paper[0]} ({paper[1]})" if paper else "",
        })  # fmt: skip
    return pd.DataFrame(out)


def _label(r: dict) -> str:
    one_draw = r["method"] == "importance" and not missing(r["samples"]) and int(r["samples"]) == 1
    return METHOD_LABEL.get(r["method"], r["method"]) + (" (1 draw: equals uniform)" if one_draw else "")


def tightest_text(rows: pd.DataFrame, confidence: float = 0.95) -> str:
    """Which bound is tightest (lowest bits/dim) per SDE, and by how much against uniform."""
    parts = []
    for (dataset, sde), group in rows.dropna(subset=["bpd"]).groupby(["dataset", "sde"], sort=False):
        best = group.loc[group["bpd"].idxmin()]
        where = f"{dataset}/{sde_label(sde)}"
        if len(group) < 2:
            continue
        if best["method"] == "uniform":
            others = group[group["method"] != "uniform"]
            gaps = ", ".join(f"{METHOD_LABEL.get(o['method'], o['method'])} "
                             f"{_signed(o['diff_to_uniform'], o['diff_ci_low'], o['diff_ci_high'])}"
                             for o in others.to_dict("records"))  # fmt: skip
            parts.append(f"{where}: the paper's uniform bound is the tightest "
                         f"({pm(best['bpd'], best['bpd_sem'])} bits/dim; the others differ by {gaps})")
            continue
        d, lo, hi = best["diff_to_uniform"], best["diff_ci_low"], best["diff_ci_high"]
        sure = "" if missing(hi) or hi < 0 else ", not distinguishable from it at this confidence"
        if best["method"] == "importance" and best["divergence"] in ("rademacher", "gaussian"):
            sure += (" (its weights carry the Hutchinson probes' noise, which lowers it: with a "
                     "stochastic divergence it is a bound only as n_probes grows)")
        parts.append(f"{where}: {METHOD_LABEL.get(best['method'], best['method'])} is the tightest, "
                     f"{pm(best['bpd'], best['bpd_sem'])} bits/dim, {_signed(d, lo, hi)} bits/dim "
                     f"against uniform{sure}")
    if not parts:
        return ""
    return (f"Tightest bound on this run (lowest bits/dim; paired differences to uniform over the same "
            f"test images, {confidence:.0%} interval): " + "; ".join(parts) + ".")


def _signed(d, lo, hi) -> str:
    if missing(d):
        return "n/a"
    text = with_ci(d, lo, hi)
    return text if d < 0 or math.isclose(d, 0.0) else "+" + text
