"""The report stage: tidy tables, figures, the paper's orderings and provenance.

Entry point: :func:`build_report`. Inputs (written by the pipeline's earlier stages; every
field is read from the files' contents, never parsed out of names):

* FID results, one JSON per case (``metrics/{dataset}/{sde}/fid/{case}.json``) with keys
  ``dataset, sde, sampler, predictor, corrector, steps, denoise, nfe, fid`` (required) and
  ``kid, kid_std, seconds, n_samples, feature_extractor`` (optional). ``steps`` may be null
  for adaptive ODE solvers. A case is classified from its fields: probability-flow ODE when
  ``sampler`` starts with "ode" or ``predictor`` is an ODE method (rk45, heun, euler);
  otherwise predictor-only / corrector-only / PC from whether predictor / corrector is "none".
* likelihood results, one JSON per (dataset, sde) (``metrics/{dataset}/{sde}/nll.json``) with
  ``dataset, sde, bpd`` (required) and ``bpd_sem, nfe, n_images, divergence, n_probes, rtol,
  atol`` (optional).
* optional, located from the JSONs' ``dataset`` and ``sde`` fields under the documented layout:
  ``{checkpoints_dir}/{dataset}/{sde}/train_log.csv`` (columns step, loss, ...),
  ``{checkpoints_dir}/{dataset}/{sde}/selection.csv`` (columns step, fid) and
  ``{samples_dir}/{dataset}/{sde}/{case}.pt`` (``{"images": uint8 (N, C, H, W)}``), ``case``
  being the FID JSON's file stem. Missing optional files only drop their figure.
* optional Snakemake ``benchmark:`` TSV files (column ``s``) for wall time per stage.

Outputs in ``out_dir``: ``metrics.csv``, ``likelihood.csv``, ``report.html`` (self-contained,
figures embedded as base64 PNG), ``report.md`` (links ``figures/*.png``) and ``figures/``; and,
for ``dvc exp show`` / ``dvc plots``, ``metrics.json`` (flat: ``{dataset}/{sde}/{case}/fid``,
``.../kid`` and ``{dataset}/{sde}/bpd``), ``fid_vs_steps.csv`` (one row per case) and
``train_loss.csv`` (``step`` plus one loss column per SDE, from the training logs).
Paper numbers (Song et al., ICLR 2021, CIFAR-10) sit beside ours only where the same case
exists, marked as a different scale.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import platform
import subprocess
from collections.abc import Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import pandas as pd
import torch
import yaml
from matplotlib.figure import Figure

from scoresde.checkpoint import atomic_write

FID_COLUMNS = [
    "dataset", "sde", "sampler", "predictor", "corrector", "steps", "denoise", "nfe", "fid",
    "kid", "kid_std", "seconds", "feature_extractor", "n_samples",
]  # fmt: skip
NLL_COLUMNS = [
    "dataset", "sde", "bpd", "bpd_sem", "nfe", "n_images", "divergence", "n_probes", "rtol",
    "atol",
]  # fmt: skip
FID_REQUIRED = FID_COLUMNS[:9]
NLL_REQUIRED = NLL_COLUMNS[:3]
ODE_METHODS = ("rk45", "heun", "euler", "heun-sigma", "euler-sigma")
SDE_ORDER = ("ve", "vp", "subvp")  # the paper's order, used for rows and panels
PAPER_TAG = "paper, CIFAR-10, different scale"

# Song et al. 2021, Table 1: CIFAR-10 FID, DDPM-size nets, N = 1000 (as in DESIGN.md).
# (sde, kind, predictor or ODE method, corrector, steps, FID, the paper's name for the case)
PAPER_FID = (
    ("ve", "predictor", "reverse_diffusion", "none", 1000, 4.79, "reverse diffusion P1000"),
    ("ve", "predictor", "reverse_diffusion", "none", 2000, 4.74, "reverse diffusion P2000"),
    ("ve", "pc", "reverse_diffusion", "langevin", 1000, 3.60, "reverse diffusion PC1000"),
    ("ve", "corrector", "none", "langevin", 2000, 20.43, "corrector only C2000"),
    # "probability flow P1000": the PF ODE discretised in N steps; our closest case is the
    # fixed-step Euler ODE sampler with 1000 steps. PF PC1000 has no counterpart here.
    ("ve", "ode", "euler", "none", 1000, 15.41, "probability flow P1000"),
    ("ve", "ode_pc", "euler", "langevin", 1000, 3.51, "probability flow PC1000"),
    ("vp", "predictor", "reverse_diffusion", "none", 1000, 3.21, "reverse diffusion P1000"),
    ("vp", "pc", "reverse_diffusion", "langevin", 1000, 3.18, "reverse diffusion PC1000"),
    ("vp", "ode", "euler", "none", 1000, 3.59, "probability flow P1000"),
    ("vp", "ode_pc", "euler", "langevin", 1000, 3.06, "probability flow PC1000"),
)
# Table 2: CIFAR-10 NLL (bits/dim); (sde, bpd, model). Table 3: FID of the deep models.
PAPER_BPD = (("vp", 3.16, "DDPM++ cont."), ("subvp", 3.02, "DDPM++ cont."),
             ("subvp", 2.99, "DDPM++ cont. (deep)"))  # fmt: skip
PAPER_FID_DEEP = (("ve", 2.20, "NCSN++ cont. (deep)"), ("vp", 2.41, "DDPM++ cont. (deep)"),
                  ("subvp", 2.41, "DDPM++ cont. (deep)"))  # fmt: skip


# --------------------------------------------------------------------------- loading


def _read_json(path, required) -> dict:
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read results file {path}: {err}") from err
    missing = [k for k in required if k not in record]
    if missing:
        raise ValueError(f"results file {path} lacks the field(s) {', '.join(missing)}")
    return record


def _as_bool(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def load_fid_results(files: Sequence) -> pd.DataFrame:
    """One row per FID JSON (columns FID_COLUMNS + ``case``, ``kind``), sorted."""
    rows = []
    for path in files:
        rec = _read_json(path, FID_REQUIRED)
        row = {c: rec.get(c) for c in FID_COLUMNS}
        row["denoise"] = _as_bool(row["denoise"])
        row["feature_extractor"] = row["feature_extractor"] or "unknown"
        row["case"] = Path(path).stem
        row["kind"] = sampler_kind(row)
        rows.append(row)
    df = pd.DataFrame(rows, columns=[*FID_COLUMNS, "case", "kind"])
    for col in ("steps", "n_samples"):
        df[col] = pd.array([None if _missing(v) else int(v) for v in df[col]], dtype="Int64")
    for col in ("nfe", "fid", "kid", "kid_std", "seconds"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    if (df["nfe"].dropna() % 1 == 0).all():
        df["nfe"] = df["nfe"].astype("Int64")
    df["denoise"] = df["denoise"].astype(bool)
    keys = ["dataset", "sde", "sampler", "predictor", "corrector", "steps", "denoise"]
    return _sorted(df, keys)


def load_nll_results(files: Sequence) -> pd.DataFrame:
    """One row per likelihood JSON (columns NLL_COLUMNS), sorted by dataset and SDE."""
    rows = [{c: _read_json(p, NLL_REQUIRED).get(c) for c in NLL_COLUMNS} for p in files]
    df = pd.DataFrame(rows, columns=NLL_COLUMNS)
    for col in ("bpd", "bpd_sem", "nfe", "rtol", "atol"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    return _sorted(df, ["dataset", "sde"])


def _sde_key(sde) -> tuple:
    return (SDE_ORDER.index(sde) if sde in SDE_ORDER else len(SDE_ORDER), str(sde))


def _sorted(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    def key(col):
        return col.map(lambda s: _sde_key(s)[0]) if col.name == "sde" else col

    df = df.sort_values(keys, na_position="last", kind="stable", key=key)
    return df.reset_index(drop=True)


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def _is_none(name) -> bool:
    return _missing(name) or str(name).strip().lower() in ("", "none", "null")


def sampler_kind(row: dict) -> str:
    """"ode", "pc", "predictor" (P-only), "corrector" (C-only) or "unknown" from the fields."""
    if str(row["sampler"]).lower().startswith("ode") or str(row["predictor"]) in ODE_METHODS:
        return "ode"
    p_none, c_none = _is_none(row["predictor"]), _is_none(row["corrector"])
    if p_none and c_none:
        return "unknown"
    return "corrector" if p_none else "predictor" if c_none else "pc"


def _ode_method(row: dict) -> str:
    if str(row["predictor"]) in ODE_METHODS:
        return str(row["predictor"])
    return str(row["sampler"]).lower().removeprefix("ode").strip("_-:") or "rk45"


def paper_fid(row: dict) -> tuple[float, str] | None:
    """The paper's Table 1 (FID, case name) for the same SDE/sampler/steps, or None."""
    kind = row["kind"]
    pred = _ode_method(row) if kind == "ode" else str(row["predictor"])
    corr = "none" if _is_none(row["corrector"]) else str(row["corrector"])
    for sde, pkind, ppred, pcorr, steps, fid, name in PAPER_FID:
        same = (sde, pkind, ppred, pcorr) == (row["sde"], kind, pred, corr)
        if same and not _missing(row["steps"]) and int(row["steps"]) == steps:
            return fid, name
    return None


def paper_bpd(sde: str) -> tuple[float, str] | None:
    """The paper's Table 2 bits/dim for the same SDE (the non-deep model), or None."""
    return next(((b, m) for s, b, m in PAPER_BPD if s == sde), None)


# --------------------------------------------------------------------------- orderings


def _fmt(x) -> str:
    return "n/a" if _missing(x) else f"{x:.4g}"


def _pm(x, err) -> str:
    """``x ± err``, both to the decimals of err's second significant digit."""
    if _missing(x) or _missing(err) or not err > 0:
        return _fmt(x)
    decimals = max(0, 1 - math.floor(math.log10(err)))
    return f"{x:.{decimals}f} ± {err:.{decimals}f}"


def _case_text(r: dict) -> str:
    """A case in words, without dataset and SDE."""
    how = f"{r['predictor']} ODE solver" if r["kind"] == "ode" else (
        f"{r['predictor']} + {r['corrector']}")  # fmt: skip
    steps = "adaptive steps" if _missing(r["steps"]) else f"{r['steps']} steps"
    return f"{r['sampler']} ({how}), {steps}, {'Tweedie' if r['denoise'] else 'no'} denoising"


def _describe(r: dict) -> str:
    steps = "adaptive" if _missing(r["steps"]) else r["steps"]
    tweedie = ", Tweedie" if r["denoise"] else ""
    return f"{r['dataset']}/{r['sde']} {r['sampler']} ({r['predictor']}, {r['corrector']}, {steps}{tweedie})"


def _verdict(statement: str, checks: list[tuple[bool, str]], none_why: str):
    if not checks:
        return statement, None, f"not decidable: {none_why}"
    n_ok = sum(ok for ok, _ in checks)
    text = "".join(f"\n{'✓' if ok else '✗'} {t}" for ok, t in checks)
    return statement, n_ok == len(checks), f"{n_ok} of {len(checks)} comparisons hold:{text}"


def _records(df: pd.DataFrame, **where) -> list[dict]:
    recs = df.to_dict("records")
    return [r for r in recs if all(r[k] == v for k, v in where.items()) and not _missing(r["fid"])]


def _eq(x, y) -> bool:
    if _missing(x) or _missing(y):
        return _missing(x) and _missing(y)
    return bool(x == y)


def _same(a: dict, b: dict, keys) -> bool:
    return all(_eq(a[k], b[k]) for k in keys)


GROUP = ("dataset", "feature_extractor", "sde")


def ordering_pc_beats_predictor(fid: pd.DataFrame, sde: str = "ve"):
    """Table 1: PC (corrector + predictor) has lower FID than P-only at equal steps."""
    statement = f"PC beats predictor-only at equal steps ({sde.upper()} SDE)"
    recs = _records(fid, sde=sde)
    keys = (*GROUP, "predictor", "steps", "denoise")
    checks = [
        (c["fid"] < p["fid"], f"{_describe(c)} FID {_fmt(c['fid'])} vs P-only {_fmt(p['fid'])}")
        for p in recs if p["kind"] == "predictor"
        for c in recs if c["kind"] == "pc" and _same(p, c, keys)
    ]  # fmt: skip
    return _verdict(statement, checks, f"no {sde.upper()} PC and P-only cases with equal steps")


def ordering_corrector_only_worst(fid: pd.DataFrame):
    """Table 1: corrector-only has the highest FID among fixed-step samplers using no more NFE."""
    statement = "Corrector-only sampling is worst (at an equal or smaller NFE budget)"
    recs, checks = _records(fid), []
    for c in (r for r in recs if r["kind"] == "corrector"):
        rivals = [r for r in recs if r["kind"] in ("predictor", "pc") and _same(r, c, GROUP)
                  and r["nfe"] <= c["nfe"]]  # fmt: skip
        if rivals:
            best = max(rivals, key=lambda r: r["fid"])
            text = (f"{_describe(c)} FID {_fmt(c['fid'])} vs worst rival with NFE <= "
                    f"{_fmt(c['nfe'])}: {_describe(best)} {_fmt(best['fid'])}")  # fmt: skip
            checks.append((c["fid"] > best["fid"], text))
    return _verdict(statement, checks, "no corrector-only case with a P-only/PC rival")


def ordering_ode_fewer_nfe(fid: pd.DataFrame):
    """The probability-flow ODE reaches a given FID with fewer NFE than fixed-step samplers."""
    statement = "Probability-flow ODE needs fewer NFE for a given FID than fixed-step samplers"
    recs, checks = _records(fid), []
    for o in (r for r in recs if r["kind"] == "ode"):
        rivals = [r for r in recs if r["kind"] in ("predictor", "pc", "corrector")
                  and _same(r, o, GROUP)]  # fmt: skip
        if not rivals:
            continue
        good = [r for r in rivals if r["fid"] <= o["fid"]]
        head = f"{_describe(o)}: FID {_fmt(o['fid'])} at NFE {_fmt(o['nfe'])}"
        if not good:
            checks.append((True, f"{head}; no fixed-step sampler reaches that FID"))
            continue
        cheap = min(good, key=lambda r: r["nfe"])
        text = f"{head}; cheapest fixed-step match {_describe(cheap)} NFE {_fmt(cheap['nfe'])}"
        checks.append((o["nfe"] < cheap["nfe"], text))
    return _verdict(statement, checks, "no ODE case with fixed-step rivals")


def ordering_tweedie_lowers_fid(fid: pd.DataFrame):
    """A final Tweedie denoising step lowers FID (same sampler, steps and SDE)."""
    statement = "Tweedie denoising lowers FID"
    checks = [
        (on["fid"] < off["fid"], f"{_describe(off)}: FID {_fmt(off['fid'])} -> {_fmt(on['fid'])}")
        for off, on in tweedie_pairs(fid)
    ]
    return _verdict(statement, checks, "no case run both with and without denoising")


def tweedie_pairs(fid: pd.DataFrame) -> list[tuple[dict, dict]]:
    """(without, with) denoising records of the same dataset/SDE/sampler/steps."""
    recs = _records(fid)
    keys = (*GROUP, "sampler", "predictor", "corrector", "steps")
    return [
        (off, on)
        for off in recs if not off["denoise"]
        for on in recs if on["denoise"] and _same(on, off, keys)
    ]  # fmt: skip


def ordering_subvp_lowest_bpd(nll: pd.DataFrame):
    """Table 2: the sub-VP SDE gives the lowest bits/dim."""
    statement = "Sub-VP has the lowest bits/dim"
    checks = []
    for dataset, group in nll.dropna(subset=["bpd"]).groupby("dataset", sort=True):
        bpd = dict(zip(group["sde"], group["bpd"], strict=True))
        if "subvp" in bpd and len(bpd) > 1:
            others = {k: v for k, v in bpd.items() if k != "subvp"}
            text = f"{dataset}: " + ", ".join(f"{k} {_fmt(v)}" for k, v in sorted(bpd.items()))
            checks.append((bpd["subvp"] < min(others.values()), text))
    return _verdict(statement, checks, "no dataset with sub-VP and another SDE")


def paper_orderings(fid: pd.DataFrame, nll: pd.DataFrame) -> list[tuple[str, bool | None, str]]:
    """All orderings the paper reports, each as (statement, held, evidence)."""
    return [
        ordering_pc_beats_predictor(fid, "ve"),
        ordering_corrector_only_worst(fid),
        ordering_ode_fewer_nfe(fid),
        ordering_tweedie_lowers_fid(fid),
        ordering_subvp_lowest_bpd(nll),
    ]


# --------------------------------------------------------------------------- figures

SDE_LABEL = {"ve": "VE", "vp": "VP", "subvp": "sub-VP"}


def _sde_label(sde) -> str:
    return SDE_LABEL.get(sde, str(sde))


def figure_name(kind: str, dataset: str, sde: str | None = None) -> str:
    """File stem of a figure: ``{kind}_{dataset}``, or ``{kind}_{dataset}_{sde}`` per SDE."""
    return f"{kind}_{dataset}" + (f"_{sde}" if sde else "")


def expected_figures(dataset: str, sdes: Sequence[str], tweedie: bool) -> list[tuple]:
    """(name, kind, sde or None) of every figure :func:`build_report` writes from complete inputs.

    Complete: an FID result per case and a likelihood result per SDE, each SDE's training log,
    selection table and samples. ``tweedie``: the sweep runs cases both with and without the
    final denoising step. The workflow declares exactly these files as the report's outputs.
    """
    kinds = [("fid_vs_steps", None), ("fid_vs_nfe", None)] + [("tweedie", None)] * tweedie
    kinds += [("samples", sde) for sde in sorted(sdes, key=_sde_key)]
    kinds += [("bpd", None), ("loss", None), ("selection", None)]
    return [(figure_name(kind, dataset, sde), kind, sde) for kind, sde in kinds]


def _png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def _panels(n: int, title: str, width: float = 4.2):
    fig = Figure(figsize=(width * max(n, 1), 3.9), layout="constrained")
    axes = fig.subplots(1, max(n, 1), squeeze=False)[0]
    fig.suptitle(title)
    return fig, axes


def _plain(value, _pos=None) -> str:
    return f"{value:g}"


def _log_axis(ax, which: str, values, fixed: bool = False) -> None:
    """Log scale with plain tick labels where the values span a factor of 10 or more (``fixed``:
    always log, ticks at the values themselves, 20% apart at least, when there are few)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    values = sorted({float(v) for v in values if not _missing(v) and float(v) > 0})
    if not values or (not fixed and values[-1] / values[0] < 10):
        return
    axis = ax.xaxis if which == "x" else ax.yaxis
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    if fixed and len(values) <= 8:
        ticks = [values[0]]
        for v in values[1:]:
            if v > 1.2 * ticks[-1]:
                ticks.append(v)
        axis.set_major_locator(FixedLocator(ticks))
    axis.set_major_formatter(FuncFormatter(_plain))
    axis.set_minor_formatter(NullFormatter())


def _line_label(r: dict) -> str:
    parts = "ODE" if r["kind"] == "ode" else f"{r['predictor']} + {r['corrector']}"
    return f"{r['sampler']} ({parts})"


def plot_fid_curves(fid: pd.DataFrame, x: str, title: str) -> Figure:
    """FID against ``x`` ("steps" or "nfe"), one panel per SDE, one line per sampler (colour)
    and denoising setting (dashed: Tweedie), one legend below the panels."""
    sdes = sorted(fid["sde"].unique(), key=_sde_key)
    fig, axes = _panels(len(sdes), title)
    everything = sorted({_line_label(r) for r in fid.to_dict("records")})
    colours = {lab: f"C{i % 10}" for i, lab in enumerate(everything)}  # the same in every figure
    recs = fid[fid[x].notna() & fid["fid"].notna()].to_dict("records")
    handles = {}
    for ax, sde in zip(axes, sdes, strict=False):
        mine = [r for r in recs if r["sde"] == sde]
        for label, denoise in sorted({(_line_label(r), r["denoise"]) for r in mine}):
            line = sorted((r for r in mine if (_line_label(r), r["denoise"]) == (label, denoise)),
                          key=lambda r: r[x])  # fmt: skip
            name = f"{label}, {'Tweedie' if denoise else 'no'} denoising"
            handles[name] = ax.plot([float(r[x]) for r in line], [r["fid"] for r in line],
                                    marker="s" if denoise else "o", color=colours[label],
                                    linestyle="--" if denoise else "-", label=name,
                                    markerfacecolor="none" if denoise else None)[0]  # fmt: skip
        xlabel = "NFE (score-network evaluations per sample)" if x == "nfe" else "sampler steps"
        ax.set(title=f"{_sde_label(sde)} SDE", xlabel=xlabel, ylabel="FID (lower is better)")
        _log_axis(ax, "x", [r[x] for r in mine], fixed=True)
        if not mine:
            ax.text(0.5, 0.5, "no case with a step count" if x == "steps" else "no data",
                    ha="center", va="center", transform=ax.transAxes, color="0.4")  # fmt: skip
    if handles:
        fig.legend(handles.values(), handles.keys(), loc="outside lower center",
                   ncols=min(2, len(handles)), fontsize=8)  # fmt: skip
    return fig


def plot_tweedie(fid: pd.DataFrame, title: str) -> Figure | None:
    """FID with minus FID without the final Tweedie step, one bar per case run both ways."""
    pairs = tweedie_pairs(fid)
    if not pairs:
        return None
    fig = Figure(figsize=(6.4, 1.4 + 0.3 * len(pairs)), layout="constrained")
    ax = fig.subplots()
    pos = list(range(len(pairs)))[::-1]  # the first case on top
    delta = [on["fid"] - off["fid"] for off, on in pairs]
    bars = ax.barh(pos, delta, color=["tab:green" if d < 0 else "tab:red" for d in delta])
    ax.bar_label(bars, [f"{_fmt(off['fid'])} → {_fmt(on['fid'])}" for off, on in pairs], fontsize=7,
                 padding=3)  # fmt: skip
    names = [f"{_sde_label(off['sde'])} {off['sampler']}, "
             f"{'adaptive' if _missing(off['steps']) else str(off['steps']) + ' steps'}"
             for off, _ in pairs]  # fmt: skip
    ax.set_yticks(pos, names, fontsize=8)
    ax.axvline(0, color="k", linewidth=0.8)
    ax.margins(x=0.3)
    ax.set(xlabel="FID with Tweedie minus FID without (< 0: denoising helped)", title=title)
    return fig


def plot_samples(images: torch.Tensor, title: str) -> Figure:
    """A grid of the first 64 uint8 samples."""
    from torchvision.utils import make_grid

    grid = make_grid(images[:64], nrow=8, padding=1, pad_value=255).permute(1, 2, 0)
    fig = Figure(figsize=(4.4, 4.8), layout="constrained")
    ax = fig.subplots()
    ax.imshow(grid.numpy(), interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    return fig


def plot_series(series: dict[str, pd.DataFrame], x: str, y: str, title: str, logy=False):
    """One line per SDE of ``y`` against ``x``; marks the minimum for checkpoint selection."""
    fig = Figure(figsize=(5.2, 3.8), layout="constrained")
    ax = fig.subplots()
    long = False
    for sde in sorted(series, key=_sde_key):
        df = series[sde]
        long |= len(df) >= 100
        smooth = df[y].rolling(max(1, len(df) // 50), min_periods=1).mean()
        line = ax.plot(df[x], smooth, label=f"{_sde_label(sde)} SDE",
                       marker="o" if len(df) < 30 else None)[0]  # fmt: skip
        if y == "fid":
            best = df.loc[df[y].idxmin()]
            ax.scatter([best[x]], [best[y]], s=120, facecolors="none", edgecolors="k", zorder=3)
            ax.annotate(f"chosen: step {int(best[x])}", (best[x], best[y]), fontsize=7,
                        xytext=(-6, 8), textcoords="offset points", ha="right",
                        color=line.get_color())  # fmt: skip
    ylabel = {"fid": "quick FID (lower is better)", "loss": "DSM loss"}.get(y, y)
    ylabel += " (running mean)" if long and y != "fid" else ""
    ax.set(xlabel="training step", ylabel=ylabel, title=title)
    if logy:
        _log_axis(ax, "y", pd.concat([df[y] for df in series.values()]))
    ax.legend(fontsize=8)
    return fig


def plot_bpd(nll: pd.DataFrame, title: str) -> Figure:
    """Bits/dim per SDE with standard-error bars."""
    fig = Figure(figsize=(4.4, 3.8), layout="constrained")
    ax = fig.subplots()
    sem = nll["bpd_sem"].fillna(0.0)
    bars = ax.bar([f"{_sde_label(s)} SDE" for s in nll["sde"]], nll["bpd"], yerr=sem, capsize=4,
                  color="tab:blue")  # fmt: skip
    ax.bar_label(bars, labels=[_pm(b, s) for b, s in zip(nll["bpd"], nll["bpd_sem"], strict=True)],
                 fontsize=8, label_type="center", color="white")  # fmt: skip
    ax.set(ylabel="test bits/dim (lower is better)", title=title)
    return fig


# --------------------------------------------------------------------------- figure assembly


def _read_csv_if(path: Path, needed: Sequence[str]) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    df = pd.read_csv(path)
    return df if set(needed) <= set(df.columns) and len(df) else None


def _load_images(path: Path) -> torch.Tensor | None:
    if not path.is_file():
        return None
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or "images" not in blob:
        raise ValueError(f"samples file {path} lacks an 'images' tensor")
    images = blob["images"]
    if images.is_floating_point():  # tolerate [0, 1] floats; the agreed format is uint8
        images = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    return images if images.ndim == 4 else None


def _sample_figures(fid, dataset, samples_dir):
    figs = {}
    for sde in sorted(set(fid["sde"]), key=_sde_key):
        sub = fid[(fid["sde"] == sde) & fid["fid"].notna()]
        for r in sub.sort_values("fid", kind="stable").to_dict("records"):
            images = _load_images(Path(samples_dir, dataset, sde, f"{r['case']}.pt"))
            if images is not None:
                title = (f"{dataset}, {_sde_label(sde)} SDE: lowest FID ({_fmt(r['fid'])})\n"
                         f"{_case_text(r)}")  # fmt: skip
                caption = (f"{dataset}, {_sde_label(sde)} SDE: the first {min(64, len(images))} "
                           f"samples of the case with the lowest FID ({_fmt(r['fid'])}): "
                           f"{_case_text(r)}.")  # fmt: skip
                figs[figure_name("samples", dataset, sde)] = (plot_samples(images, title), caption)
                break
    return figs


def _checkpoint_figures(dataset, sdes, checkpoints_dir):
    logs, sels = {}, {}
    for sde in sdes:
        base = Path(checkpoints_dir, dataset, sde)
        if (df := _read_csv_if(base / "train_log.csv", ["step", "loss"])) is not None:
            logs[sde] = df
        if (df := _read_csv_if(base / "selection.csv", ["step", "fid"])) is not None:
            sels[sde] = df
    figs = {}
    if logs:
        title = f"{dataset}: training loss (denoising score matching)"
        caption = (f"{dataset}: denoising score-matching loss against training step per SDE "
                   "(a running mean for long logs; log scale when it spans a factor of 10).")  # fmt: skip
        figs[figure_name("loss", dataset)] = (plot_series(logs, "step", "loss", title, True), caption)
    if sels:
        title = f"{dataset}: checkpoint selection by quick FID"
        caption = (f"{dataset}: quick FID of every saved snapshot against its training step; the "
                   "circled point of each SDE is the checkpoint kept as best.pt.")  # fmt: skip
        figs[figure_name("selection", dataset)] = (plot_series(sels, "step", "fid", title), caption)
    return figs


def _dataset_figures(dataset, fid, nll, checkpoints_dir, samples_dir):
    """{name: (Figure, caption)} for one dataset."""
    figs = {}
    if len(fid):
        how = "colour: sampler; dashed, open squares: with the final Tweedie denoising step"
        title = f"{dataset}: FID vs sampler steps"
        caption = (f"{dataset}: FID against the number of sampler steps, one panel per SDE ({how})."
                   " Adaptive ODE solvers have no step count: see FID vs NFE.")  # fmt: skip
        figs[figure_name("fid_vs_steps", dataset)] = (plot_fid_curves(fid, "steps", title), caption)
        title = f"{dataset}: FID vs NFE"
        caption = (f"{dataset}: FID against the number of score-network evaluations (NFE) per "
                   f"sample, one panel per SDE ({how}).")  # fmt: skip
        figs[figure_name("fid_vs_nfe", dataset)] = (plot_fid_curves(fid, "nfe", title), caption)
        title = f"{dataset}: effect of Tweedie denoising on FID"
        caption = (f"{dataset}: change of FID from the final Tweedie denoising step for every "
                   "case run both ways (green: lower FID with denoising; labels: FID without -> "
                   "with).")  # fmt: skip
        if (fig := plot_tweedie(fid, title)) is not None:
            figs[figure_name("tweedie", dataset)] = (fig, caption)
        if samples_dir is not None:
            figs.update(_sample_figures(fid, dataset, samples_dir))
    if len(nll):
        title = f"{dataset}: test bits/dim per SDE"
        caption = (f"{dataset}: test-set bits/dim per SDE from the probability-flow ODE, with "
                   "one standard error over the test images.")  # fmt: skip
        figs[figure_name("bpd", dataset)] = (plot_bpd(nll, title), caption)
    if checkpoints_dir is not None:
        sdes = sorted(set(fid["sde"]) | set(nll["sde"]), key=_sde_key)
        figs.update(_checkpoint_figures(dataset, sdes, checkpoints_dir))
    return figs


def make_figures(fid, nll, fig_dir, checkpoints_dir=None, samples_dir=None) -> list[dict]:
    """Write every figure as ``fig_dir/{name}.png``; returns [{name, path, caption, png}]."""
    out = []
    for dataset in sorted(set(fid["dataset"]) | set(nll["dataset"])):
        figs = _dataset_figures(
            dataset, fid[fid["dataset"] == dataset], nll[nll["dataset"] == dataset],
            checkpoints_dir, samples_dir,
        )  # fmt: skip
        for name, (fig, caption) in figs.items():
            png, path = _png_bytes(fig), Path(fig_dir, f"{name}.png")
            with atomic_write(path) as tmp:
                Path(tmp).write_bytes(png)
            out.append({"name": name, "path": path, "caption": caption, "png": png})
    return out


# --------------------------------------------------------------------------- tables


def sweep_table(fid: pd.DataFrame) -> pd.DataFrame:
    """The sampler sweep with the paper's Table 1 FID where the same case exists."""
    rows = []
    for r in fid.to_dict("records"):
        paper = paper_fid(r)
        rows.append({
            "dataset": r["dataset"], "SDE": r["sde"], "sampler": r["sampler"],
            "predictor": r["predictor"], "corrector": r["corrector"],
            "steps": "adaptive" if _missing(r["steps"]) else int(r["steps"]),
            "Tweedie denoising": "yes" if r["denoise"] else "no", "NFE": _fmt(r["nfe"]),
            "FID": _fmt(r["fid"]), "KID (mean ± s.d.)": _pm(r["kid"], r["kid_std"]),
            "samples": _cell(r["n_samples"]), "sampling time (s)": _fmt(r["seconds"]),
            "feature extractor": r["feature_extractor"],
            f"FID ({PAPER_TAG})": f"{paper[0]} ({paper[1]})" if paper else "",
        })  # fmt: skip
    return pd.DataFrame(rows)


def likelihood_table(nll: pd.DataFrame) -> pd.DataFrame:
    """Bits/dim per (dataset, SDE) with the paper's Table 2 value for the same SDE."""
    rows = []
    for r in nll.to_dict("records"):
        paper = paper_bpd(r["sde"])
        rows.append({
            "dataset": r["dataset"], "SDE": r["sde"],
            "bits/dim (± s.e.)": _pm(r["bpd"], r["bpd_sem"]), "NFE": _fmt(r["nfe"]),
            "test images": _cell(r["n_images"]), "divergence estimate": _cell(r["divergence"]),
            f"bits/dim ({PAPER_TAG})": f"{paper[0]} ({paper[1]})" if paper else "",
        })  # fmt: skip
    return pd.DataFrame(rows)


def paper_reference_table() -> pd.DataFrame:
    """The paper's CIFAR-10 numbers quoted in DESIGN.md (Tables 1-3), for reference."""
    def row(table, sde, case, metric, value):
        return {"paper table": table, "SDE": sde, "case / model": case, "metric": metric,
                "value (paper, CIFAR-10)": value}  # fmt: skip

    rows = [row("Table 1", s, n, "FID", v) for s, _, _, _, _, v, n in PAPER_FID]
    rows += [row("Table 2", s, m, "bits/dim", v) for s, v, m in PAPER_BPD]
    rows += [row("Table 3", s, m, "FID", v) for s, v, m in PAPER_FID_DEEP]
    return pd.DataFrame(rows)


def _cell(v) -> str:
    return "" if _missing(v) else str(v)


def html_table(df: pd.DataFrame) -> str:
    """An HTML table; the paper's columns are shaded and verdicts coloured."""

    def cls(col, value=None) -> str:
        names = ["paper"] if "paper" in str(col) else []
        if col == "verdict" and value in _VERDICT_CLASS:
            names.append(_VERDICT_CLASS[value])
        if value is not None and len(value) <= 24:
            names.append("nw")
        return f" class='{' '.join(names)}'" if names else ""

    def text(v) -> str:
        lines = html.escape(_cell(v)).split("\n")
        if len(lines) <= 4:
            return "<br>".join(lines)
        # a long list of evidence: its first line as the summary, the list one click away
        return (f"<details><summary>{lines[0]} (show {len(lines) - 1})</summary>"
                f"{'<br>'.join(lines[1:])}</details>")

    head = "".join(f"<th{cls(c)}>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join(
        "<tr>" + "".join(f"<td{cls(c, _cell(v))}>{text(v)}</td>"
                         for c, v in zip(df.columns, row, strict=True)) + "</tr>"
        for row in df.itertuples(index=False)
    )  # fmt: skip
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def md_table(df: pd.DataFrame) -> str:
    def esc(v):
        return _cell(v).replace("|", "\\|").replace("\n", "<br>")

    lines = ["| " + " | ".join(esc(c) for c in df.columns) + " |"]
    lines.append("|" + "---|" * len(df.columns))
    lines += ["| " + " | ".join(esc(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


# --------------------------------------------------------------------------- provenance


def git_commit(repo_dir=None) -> str:
    """``git rev-parse HEAD`` (+ "-dirty" with uncommitted changes), or a note without git."""
    try:
        run = dict(cwd=repo_dir, capture_output=True, text=True, timeout=10, check=True)
        commit = subprocess.run(["git", "rev-parse", "HEAD"], **run).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], **run).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout or git unavailable)"
    return commit + ("-dirty" if dirty else "")


def package_versions() -> dict[str, str]:
    out = {}
    for name in ("scoresde", "torch", "torchvision", "torch-fidelity", "torchdiffeq", "numpy",
                 "snakemake"):  # fmt: skip
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def hardware() -> dict[str, str]:
    cuda = torch.cuda.is_available()
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu count": str(os.cpu_count()),
        "torch threads": str(torch.get_num_threads()),
        "CUDA": torch.cuda.get_device_name(0) if cuda else "not available",
    }


def stage_times(benchmark_files: Sequence) -> pd.DataFrame:
    """Wall time per Snakemake ``benchmark:`` TSV (column ``s``, optional ``max_rss``)."""
    rows = []
    for path in benchmark_files:
        try:
            df = pd.read_csv(path, sep="\t")
            seconds = float(df["s"].mean())
        except (OSError, ValueError, KeyError, pd.errors.ParserError):
            continue
        rss = float(df["max_rss"].mean()) if "max_rss" in df else math.nan
        rows.append({"job (benchmark file)": str(path), "wall time (s)": round(seconds, 2),
                     "max RSS (MB)": _fmt(rss)})  # fmt: skip
    if rows:
        total = round(sum(r["wall time (s)"] for r in rows), 2)
        rows.append({"job (benchmark file)": "total (sum over jobs)", "wall time (s)": total,
                     "max RSS (MB)": ""})  # fmt: skip
    return pd.DataFrame(rows, columns=["job (benchmark file)", "wall time (s)", "max RSS (MB)"])


def _yaml(config: dict) -> str:
    return yaml.safe_dump(json.loads(json.dumps(config, default=str)), sort_keys=False)


def provenance(config: dict | None, benchmark_files: Sequence = (), repo_dir=None) -> dict:
    """Everything needed to say how the numbers were produced."""
    return {
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git commit": git_commit(repo_dir),
        "packages": package_versions(),
        "hardware": hardware(),
        "config": _yaml(config) if config else "(not given)",
        "stage times": stage_times(benchmark_files),
    }


# --------------------------------------------------------------------------- rendering

_CSS = """body{font-family:sans-serif;max-width:1300px;margin:2em auto;padding:0 1em;line-height:1.4}
table{border-collapse:collapse;font-size:13px;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;
padding:3px 7px;vertical-align:top;text-align:left}th{background:#eee}
tbody tr:nth-child(even){background:#fafafa}th.paper{background:#f3e3b5}td.paper{background:#fdf6e3}
.wide{overflow-x:auto}pre{background:#f6f6f6;padding:1em;overflow:auto}p{max-width:75em}
.held{color:#070;font-weight:bold}.failed{color:#a00;font-weight:bold}.undecided{color:#777}
nav a{margin-right:1.2em}.figures{display:flex;flex-wrap:wrap;gap:2em;align-items:flex-start}
.nw{white-space:nowrap}figure{margin:0;display:table}figcaption{display:table-caption;caption-side:bottom;
font-size:13px;color:#333;padding-top:.3em}img{max-width:100%}"""
_MARK = {True: ("held", "held"), False: ("failed", "did not hold"),
         None: ("undecided", "undecided")}  # fmt: skip
_VERDICT_CLASS = {text: cls for cls, text in _MARK.values()}

_ORDERINGS_NOTE = (
    "Qualitative claims of the paper (its CIFAR-10 experiments), checked on this run's numbers. "
    "held: every comparable pair of cases of this run agrees; did not hold: at least one "
    "disagrees; undecided: this run has no comparable cases.")
_LIKELIHOOD_NOTE = (
    "Test-set negative log-likelihood in bits/dim (lower is better) from the probability-flow "
    "ODE, ± one standard error over the test images; NFE: score-network evaluations per batch "
    "of the ODE solve. The 'paper' column is the paper's CIFAR-10 value for the same SDE "
    "(Table 2).")
_PAPER_NOTE = (
    "Every number in this table is the paper's (Song et al. 2021, CIFAR-10, 32x32 RGB, "
    "networks of 30-60M parameters trained for 1.3M steps), not ours: quoted for orientation "
    "only. Table 1: N = 1000 steps (P2000, C2000: 2000); Table 3: the deep continuous models.")


def _kv_table(d: dict) -> pd.DataFrame:
    return pd.DataFrame({"key": list(d), "value": list(d.values())})


def _sections(fid, nll, orderings, prov):
    """[(heading, kind, payload)] shared by the HTML and Markdown renderers."""
    order_df = pd.DataFrame(
        [(s, _MARK[h][1], e) for s, h, e in orderings], columns=["ordering", "verdict", "evidence"]
    )
    extractors = ", ".join(sorted(set(fid["feature_extractor"]))) or "n/a"
    intro = (
        "Song et al., Score-Based Generative Modeling through Stochastic Differential Equations "
        "(ICLR 2021), reproduced at a small scale. Every number is from this run except those "
        f"marked '{PAPER_TAG}': the paper's own CIFAR-10 results, quoted for "
        "orientation; dataset, network and training budget differ, so compare orderings, not "
        f"values. FID and KID are computed in the features of: {extractors}.")  # fmt: skip
    sweep_df, paper_col = sweep_table(fid), f"FID ({PAPER_TAG})"
    sweep = (
        "One row per case (SDE x sampler x steps x final Tweedie denoising). FID and KID: lower "
        f"is better, in the features of {extractors}; KID is the mean ± standard deviation over "
        "subsets. NFE: score-network evaluations per sample. Sampling time: wall time to draw "
        "all samples of the case; the Tweedie on / off pair of a sampler and step count comes "
        "from one trajectory, so both rows show that run's time.")  # fmt: skip
    if fid["feature_extractor"].nunique() == 1:  # named above instead of in every row
        sweep_df = sweep_df.drop(columns="feature extractor")
    if len(sweep_df) and sweep_df[paper_col].astype(bool).any():
        sweep += (" The 'paper' column is the paper's CIFAR-10 FID (Table 1) where the paper has "
                  "the same SDE, sampler and step count.")  # fmt: skip
    elif len(sweep_df):
        sweep_df = sweep_df.drop(columns=paper_col)
        sweep += (" No case here has the SDE, sampler and step count of a case in the paper's "
                  "Table 1 (N = 1000 or 2000 steps), so no paper FID sits beside ours; the "
                  "paper's numbers are listed below.")  # fmt: skip
    return [
        (None, "text", intro),
        ("Paper orderings", "text", _ORDERINGS_NOTE),
        (None, "table", order_df),
        ("Sampler sweep", "text", sweep),
        (None, "table", sweep_df),
        ("Likelihood", "text", _LIKELIHOOD_NOTE),
        (None, "table", likelihood_table(nll)),
        ("The paper's CIFAR-10 numbers (different scale)", "text", _PAPER_NOTE),
        (None, "table", paper_reference_table()),
        ("Figures", "figures", None),
        ("Provenance", "table", _kv_table({"generated": prov["generated"],
                                           "git commit": prov["git commit"]})),  # fmt: skip
        ("Package versions", "table", _kv_table(prov["packages"])),
        ("Hardware", "table", _kv_table(prov["hardware"])),
        ("Wall time per job", "table", prov["stage times"]),
        ("Resolved configuration", "pre", prov["config"]),
    ]


def _anchor(heading: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in heading.lower()).strip("-")


def render_html(sections, figures, title) -> str:
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
             f"</title><style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"]  # fmt: skip
    links = [f"<a href='#{_anchor(h)}'>{html.escape(h)}</a>" for h, _, _ in sections if h]
    parts.append(f"<nav>{' '.join(links)}</nav>")
    for heading, kind, payload in sections:
        if heading:
            parts.append(f"<h2 id='{_anchor(heading)}'>{html.escape(heading)}</h2>")
        if kind == "table":
            body = html_table(payload) if len(payload) else "<p>(no data)</p>"
            parts.append(f"<div class='wide'>{body}</div>")
        elif kind == "text":
            parts.append(f"<p>{html.escape(payload)}</p>")
        elif kind == "pre":
            parts.append(f"<pre>{html.escape(payload)}</pre>")
        else:
            figs = "".join(_html_figure(f) for f in figures)
            parts.append(f"<div class='figures'>{figs}</div>" if figs else "<p>(no figures)</p>")
    return "\n".join([*parts, "</body></html>"])


def _html_figure(f: dict) -> str:
    data = base64.b64encode(f["png"]).decode("ascii")
    cap = html.escape(f["caption"])
    return (f"<figure id='{f['name']}'><img alt='{cap}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{cap}</figcaption></figure>")  # fmt: skip


def render_markdown(sections, figures, title, fig_rel: str) -> str:
    parts = [f"# {title}"]
    for heading, kind, payload in sections:
        if heading:
            parts.append(f"## {heading}")
        if kind == "table":
            parts.append(md_table(payload) if len(payload) else "(no data)")
        elif kind == "text":
            parts.append(payload)
        elif kind == "pre":
            parts.append(f"```yaml\n{payload}```")
        else:
            parts += [f"![{f['name']}]({fig_rel}/{f['path'].name})\n\n*{f['caption']}*"
                      for f in figures]  # fmt: skip
    return "\n\n".join(parts) + "\n"


def _write_text(path: Path, text: str) -> None:
    with atomic_write(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def _write_csvs(fid, nll, out_dir: Path) -> tuple[Path, Path]:
    paths = out_dir / "metrics.csv", out_dir / "likelihood.csv"
    for df, cols, path in ((fid, FID_COLUMNS, paths[0]), (nll, NLL_COLUMNS, paths[1])):
        with atomic_write(path) as tmp:
            df[cols].to_csv(tmp, index=False)
    return paths


# --------------------------------------------------------------------------- DVC files


def flat_metrics(fid: pd.DataFrame, nll: pd.DataFrame) -> dict[str, float | None]:
    """``{dataset}/{sde}/{case}/fid`` and ``/kid`` per case, ``{dataset}/{sde}/bpd`` per SDE."""
    out: dict[str, float | None] = {}
    for r in fid.to_dict("records"):
        for key in ("fid", "kid"):
            out[f"{r['dataset']}/{r['sde']}/{r['case']}/{key}"] = _number(r[key])
    for r in nll.to_dict("records"):
        out[f"{r['dataset']}/{r['sde']}/bpd"] = _number(r["bpd"])
    return out


def _number(value) -> float | None:
    return None if _missing(value) else float(value)


def train_loss_table(datasets: Sequence[str], sdes: Sequence[str], checkpoints_dir) -> pd.DataFrame:
    """``step`` plus one loss column per SDE (``{dataset}/{sde}`` for several datasets)."""
    table = None
    for dataset in datasets:
        for sde in sdes:
            df = _read_csv_if(Path(checkpoints_dir, dataset, sde, "train_log.csv"), ["step", "loss"])
            if df is None:
                continue
            name = sde if len(datasets) == 1 else f"{dataset}/{sde}"
            df = df[["step", "loss"]].rename(columns={"loss": name})
            table = df if table is None else table.merge(df, on="step", how="outer")
    if table is None:
        return pd.DataFrame(columns=["step"])
    return table.sort_values("step", kind="stable").reset_index(drop=True)


def _write_dvc_files(fid, nll, out_dir: Path, checkpoints_dir) -> dict[str, Path]:
    paths = {"metrics_json": out_dir / "metrics.json", "fid_vs_steps_csv": out_dir / "fid_vs_steps.csv",
             "train_loss_csv": out_dir / "train_loss.csv"}  # fmt: skip
    _write_text(paths["metrics_json"], json.dumps(flat_metrics(fid, nll), indent=2) + "\n")
    curves = fid.assign(series=fid["sde"] + "/" + fid["sampler"] + "/"
                        + fid["denoise"].map({True: "tweedie", False: "none"}))  # fmt: skip
    cols = ["dataset", "sde", "sampler", "denoise", "series", "case", "steps", "nfe", "fid", "kid"]
    with atomic_write(paths["fid_vs_steps_csv"]) as tmp:
        curves[cols].to_csv(tmp, index=False)
    datasets = sorted(set(fid["dataset"]) | set(nll["dataset"]))
    sdes = sorted(set(fid["sde"]) | set(nll["sde"]), key=_sde_key)
    loss = train_loss_table(datasets, sdes, checkpoints_dir) if checkpoints_dir else None
    with atomic_write(paths["train_loss_csv"]) as tmp:
        (loss if loss is not None else pd.DataFrame(columns=["step"])).to_csv(tmp, index=False)
    return paths


def build_report(
    fid_files: Sequence[str | os.PathLike],
    nll_files: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    checkpoints_dir: str | os.PathLike | None = None,
    samples_dir: str | os.PathLike | None = None,
    config: dict | None = None,
    benchmark_files: Sequence[str | os.PathLike] = (),
    title: str = "Score-SDE reproduction report",
    repo_dir: str | os.PathLike | None = None,
    controllable_files: Sequence[str | os.PathLike] = (),
) -> dict:
    """Write metrics.csv, likelihood.csv, report.html, report.md and figures/ into ``out_dir``.

    ``fid_files`` / ``nll_files``: the per-case FID JSONs and per-SDE likelihood JSONs (see the
    module docstring for their fields). ``checkpoints_dir`` / ``samples_dir``: roots of the
    documented layout, for training-loss, checkpoint-selection and sample-grid figures.
    ``config``: the resolved configuration (shown verbatim). ``benchmark_files``: Snakemake
    benchmark TSVs for wall time per stage. ``repo_dir``: where to ask git for the commit.
    Also writes the DVC files ``metrics.json``, ``fid_vs_steps.csv`` and ``train_loss.csv``.
    Returns the paths written plus the orderings as ``(statement, held, evidence)``.
    """
    out_dir = Path(out_dir)
    fid, nll = load_fid_results(fid_files), load_nll_results(nll_files)
    metrics_csv, likelihood_csv = _write_csvs(fid, nll, out_dir)
    dvc_files = _write_dvc_files(fid, nll, out_dir, checkpoints_dir)
    figures = make_figures(fid, nll, out_dir / "figures", checkpoints_dir, samples_dir)
    orderings = paper_orderings(fid, nll)
    sections = _sections(fid, nll, orderings, provenance(config, benchmark_files, repo_dir))
    if controllable_files:  # controllable generation: see report_controllable.py
        from .report_controllable import controllable_section

        extra = controllable_section(controllable_files, out_dir)
        at = [h for h, _, _ in sections].index("Figures")
        sections[at:at] = extra["sections"]
        figures += extra["figures"]
    html_path, md_path = out_dir / "report.html", out_dir / "report.md"
    _write_text(html_path, render_html(sections, figures, title))
    _write_text(md_path, render_markdown(sections, figures, title, "figures"))
    return {
        "metrics_csv": metrics_csv, "likelihood_csv": likelihood_csv, "html": html_path,
        "markdown": md_path, "figures": [f["path"] for f in figures], "orderings": orderings,
        **dvc_files,
    }  # fmt: skip
