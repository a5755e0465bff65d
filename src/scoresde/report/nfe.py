"""FID against NFE per SDE with the long PC run as the reference level, and the fast-sampler goal.

Works on the columns of ``reports/metrics.csv`` (sde, sampler, predictor, corrector, steps,
denoise, nfe, fid). The reference of an SDE is its predictor-corrector case (reverse diffusion +
Langevin) with the most steps (PC1000 in the paper's protocol) at its better denoise setting.
The goal (after DPM-Solver's CIFAR-10 figures 4.70 at 10 NFE and 2.87 at 20 against
PC's 2.41): the best sampler within 10 NFE reaches FID <= 1.8 x, within 20 NFE <= 1.2 x that
reference. NFE counts every score evaluation, a final Tweedie step included.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from scoresde.report.plots import _yerr
from scoresde.report.uncertainty import _replicates, decide, paired, recentred_interval

GOALS = ((10, 1.8), (20, 1.2))  # (NFE budget, largest FID / reference FID)


def _bool(value) -> bool:
    return str(value).strip().lower() in ("true", "1", "yes", "tweedie")


def _is_pc(row) -> bool:
    return str(row["predictor"]) == "reverse_diffusion" and str(row["corrector"]) == "langevin"


def reference(fid: pd.DataFrame, sde: str) -> dict | None:
    """The reference row of ``sde``: the PC case with the most steps, its lower-FID denoise
    setting; None without a PC case."""
    rows = [r for r in fid.to_dict("records") if r["sde"] == sde and _is_pc(r)
            and not _nan(r["steps"]) and not _nan(r["fid"])]
    if not rows:
        return None
    most = max(int(r["steps"]) for r in rows)
    return min((r for r in rows if int(r["steps"]) == most), key=lambda r: r["fid"])


def _nan(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _case(row) -> str:
    steps = "adaptive" if _nan(row["steps"]) else int(row["steps"])
    return f"{row['sampler']}_{steps}_{'tweedie' if _bool(row['denoise']) else 'none'}"


def _label(row) -> str:
    return f"{row['sampler']}, {'Tweedie' if _bool(row['denoise']) else 'no'} denoising"


def plot_fid_vs_nfe(fid_df: pd.DataFrame, sde: str, title: str, ax=None, confidence: float = 0.95) -> Figure:
    """FID against NFE (log axis) for every sampler of ``sde`` (one line per sampler and denoise
    setting; dashed: Tweedie), the reference PC level as a horizontal line and the goal levels
    1.2x / 1.8x as dotted lines; bars: each case's ``confidence`` bootstrap interval where the
    rows carry one. Draws into ``ax`` when given; returns its Figure."""
    if ax is None:
        fig = Figure(figsize=(6.4, 4.4), layout="constrained")
        ax = fig.subplots()
    ref = reference(fid_df, sde)
    rows = [r for r in fid_df.to_dict("records") if r["sde"] == sde and not _nan(r["nfe"])
            and not _nan(r["fid"]) and not (ref is not None and _is_pc(r)
                                            and int(r["steps"] or 0) == int(ref["steps"]))]
    labels = sorted({(str(r["sampler"]), _bool(r["denoise"])) for r in rows})
    for sampler, denoise in labels:
        line = sorted((r for r in rows if (str(r["sampler"]), _bool(r["denoise"])) == (sampler, denoise)),
                      key=lambda r: float(r["nfe"]))
        colour = f"C{sorted({s for s, _ in labels}).index(sampler) % 10}"
        ax.errorbar([float(r["nfe"]) for r in line], [float(r["fid"]) for r in line],
                    yerr=_yerr(line, confidence), color=colour, capsize=2, elinewidth=0.8,
                    marker="s" if denoise else "o", linestyle="--" if denoise else "-",
                    markerfacecolor="none" if denoise else None, label=_label(line[0]))
    if ref is not None:
        level = float(ref["fid"])
        name = f"PC{int(ref['steps'])} ({'Tweedie' if _bool(ref['denoise']) else 'no denoising'}, " \
               f"NFE {int(float(ref['nfe']))}): FID {level:.3g}"
        ax.axhline(level, color="k", linewidth=1.5, label=name)
        for factor in sorted({f for _, f in GOALS}):
            ax.axhline(factor * level, color="0.5", linewidth=0.8, linestyle=":",
                       label=f"{factor}x PC{int(ref['steps'])} (goal)")
    if rows:
        ax.set_xscale("log")
    ax.set(title=title, xlabel="NFE (score-network evaluations per sample)",
           ylabel="FID (lower is better)")
    if not rows and ref is None:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.legend(fontsize=6, loc="upper right")
    return ax.figure


def plot_fid_vs_nfe_panels(fid_df: pd.DataFrame, title: str, sdes=None, confidence: float = 0.95) -> Figure:
    """One :func:`plot_fid_vs_nfe` panel per SDE (the paper's order ve, vp, subvp first)."""
    order = {"ve": 0, "vp": 1, "subvp": 2}
    sdes = sdes or sorted(fid_df["sde"].unique(), key=lambda s: (order.get(s, 9), s))
    fig = Figure(figsize=(5.6 * max(len(sdes), 1), 4.8), layout="constrained")
    axes = fig.subplots(1, max(len(sdes), 1), squeeze=False)[0]
    fig.suptitle(title)
    for ax, sde in zip(axes, sdes, strict=False):
        plot_fid_vs_nfe(fid_df, sde, f"{sde} SDE", ax=ax, confidence=confidence)
    return fig


def _goal_verdict(best: dict, ref: dict, factor: float, confidence: float):
    """(interval of FID_best / FID_ref, verdict on FID_best <= factor * FID_ref).

    With bootstrap replicates drawn on the same resample indices (every case of a run) the
    replicate-wise d = FID_best - factor * FID_ref is a paired bootstrap of the difference: held
    when its recentred interval lies below 0, not held above, None (undecided) when it contains 0.
    Without replicates: the point estimates decide, and the interval is NaN.
    """
    ratio = float(best["fid"]) / float(ref["fid"])
    rb, rr = _replicates(best), _replicates(ref)
    if rb is None or rr is None or len(rb) != len(rr) or not paired(best, ref):
        return (math.nan, math.nan), bool(ratio <= factor)
    rb, rr = np.asarray(rb, dtype=float), np.asarray(rr, dtype=float)
    lo, hi = recentred_interval(float(best["fid"]) - factor * float(ref["fid"]), rb - factor * rr,
                                confidence)
    interval = recentred_interval(ratio, rb / rr, confidence)
    return interval, decide(lo, hi)


def _fidelity(r: dict | None) -> str | None:
    """``precision [lo, hi] / recall [lo, hi]`` of a case: what FID alone does not separate."""
    from scoresde.report.figures_of_merit import figure_cell

    if not r or _nan(r.get("precision", math.nan)):
        return None
    return f"{figure_cell(r, 'precision')} / {figure_cell(r, 'recall')}"


def goal_table(fid_df: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Per SDE and NFE budget: the best case within the budget, its FID over the reference's with
    the paired-bootstrap interval, and whether the goal held (True / False; None when undecided at
    ``confidence`` or when there is no reference or no case within the budget)."""
    out = []
    for sde in sorted(fid_df["sde"].unique()):
        ref = reference(fid_df, sde)
        rows = [r for r in fid_df.to_dict("records") if r["sde"] == sde and not _nan(r["nfe"])
                and not _nan(r["fid"])]
        for budget, factor in GOALS:
            within = [r for r in rows if float(r["nfe"]) <= budget]
            best = min(within, key=lambda r: float(r["fid"])) if within else None
            ratio = (float(best["fid"]) / float(ref["fid"])) if best and ref else None
            (lo, hi), held = _goal_verdict(best, ref, factor, confidence) if ratio else ((None, None), None)
            out.append({
                "sde": sde, "NFE budget": budget,
                "reference": f"PC{int(ref['steps'])}" if ref else None,
                "reference FID": float(ref["fid"]) if ref else None,
                "best case": _case(best) if best else None,
                "best NFE": float(best["nfe"]) if best else None,
                "best FID": float(best["fid"]) if best else None,
                "FID / reference": ratio,
                f"[{confidence:.0%} interval]": None if lo is None or _nan(lo) else f"[{lo:.2f}, {hi:.2f}]",
                "goal": f"<= {factor}x", "held": held,
                "best precision / recall": _fidelity(best),
                "reference precision / recall": _fidelity(ref),
            })
    return pd.DataFrame(out)


def _verdict(row: dict) -> str:
    if _nan(row["reference"]) or isinstance(row["reference"], float):
        return "no PC reference"
    if _nan(row["best case"]) or isinstance(row["best case"], float):
        return "no case within the budget"
    if _nan(row["held"]):
        return "undecided"
    return "held" if bool(row["held"]) else "not held"


def goal_table_text(fid_df: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """:func:`goal_table` as the report prints it: numbers as the sweep table's (``fmt``: 4
    significant digits, n/a when missing) and the verdict in words in every row (held, not held,
    undecided, or why there is none)."""
    from scoresde.report.formatting import fmt

    table = goal_table(fid_df, confidence)
    if not len(table):
        return table
    out = table.copy().astype(object)
    for column in ("reference FID", "best NFE", "best FID", "FID / reference"):
        out[column] = [fmt(v) for v in table[column]]
    interval = f"[{confidence:.0%} interval]"
    out[interval] = [v if isinstance(v, str) else "n/a" for v in table[interval]]
    out["held"] = [_verdict(r) for r in table.to_dict("records")]
    return out.fillna("n/a")
