"""The report's plots: matplotlib Figures from plain tables (no file access here)."""

from __future__ import annotations

import pandas as pd
import torch
from matplotlib.figure import Figure

from scoresde.report.formatting import fmt, missing, pm
from scoresde.report.load import sde_key, sde_label
from scoresde.report.orderings import tweedie_pairs
from scoresde.report.uncertainty import fid_difference, fid_interval


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

    values = sorted({float(v) for v in values if not missing(v) and float(v) > 0})
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


def _yerr(line: list[dict], confidence: float):
    """Asymmetric error bars (2, n) from each case's FID interval, or None without intervals."""
    bounds = [fid_interval(r, confidence) for r in line]
    if any(missing(lo) or missing(hi) for lo, hi in bounds):
        return None
    return [[max(0.0, r["fid"] - lo) for r, (lo, _) in zip(line, bounds, strict=True)],
            [max(0.0, hi - r["fid"]) for r, (_, hi) in zip(line, bounds, strict=True)]]


def plot_fid_curves(fid: pd.DataFrame, x: str, title: str, confidence: float = 0.95) -> Figure:
    """FID against ``x`` ("steps" or "nfe"), one panel per SDE, one line per sampler (colour)
    and denoising setting (dashed: Tweedie), error bars: the FID's bootstrap interval, one
    legend below the panels."""
    sdes = sorted(fid["sde"].unique(), key=sde_key)
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
            handles[name] = ax.errorbar(
                [float(r[x]) for r in line], [r["fid"] for r in line], yerr=_yerr(line, confidence),
                marker="s" if denoise else "o", color=colours[label], capsize=2, elinewidth=0.8,
                linestyle="--" if denoise else "-", label=name,
                markerfacecolor="none" if denoise else None)  # fmt: skip
        xlabel = "NFE (score-network evaluations per sample)" if x == "nfe" else "sampler steps"
        ax.set(title=f"{sde_label(sde)} SDE", xlabel=xlabel, ylabel="FID (lower is better)")
        _log_axis(ax, "x", [r[x] for r in mine], fixed=True)
        if not mine:
            ax.text(0.5, 0.5, "no case with a step count" if x == "steps" else "no data",
                    ha="center", va="center", transform=ax.transAxes, color="0.4")  # fmt: skip
    if handles:
        fig.legend(handles.values(), handles.keys(), loc="outside lower center",
                   ncols=min(2, len(handles)), fontsize=8)  # fmt: skip
    return fig


def plot_tweedie(fid: pd.DataFrame, title: str, confidence: float = 0.95) -> Figure | None:
    """FID with minus FID without the final Tweedie step, one bar per case run both ways, with
    the difference's (paired bootstrap) interval; green / red only where it excludes 0."""
    pairs = tweedie_pairs(fid)
    if not pairs:
        return None
    fig = Figure(figsize=(6.4, 1.4 + 0.3 * len(pairs)), layout="constrained")
    ax = fig.subplots()
    pos = list(range(len(pairs)))[::-1]  # the first case on top
    cmps = [fid_difference(on, off, confidence) for off, on in pairs]
    delta = [c["d"] for c in cmps]
    colour = {True: "tab:green", False: "tab:red", None: "0.65"}
    xerr = None
    if not any(missing(c["lo"]) for c in cmps):
        xerr = [[max(0.0, c["d"] - c["lo"]) for c in cmps], [max(0.0, c["hi"] - c["d"]) for c in cmps]]
    bars = ax.barh(pos, delta, xerr=xerr, capsize=2, error_kw={"elinewidth": 0.8},
                   color=[colour[c["verdict"]] for c in cmps])  # fmt: skip
    ax.bar_label(bars, [f"{fmt(off['fid'])} → {fmt(on['fid'])}" for off, on in pairs], fontsize=7,
                 padding=3)  # fmt: skip
    names = [f"{sde_label(off['sde'])} {off['sampler']}, "
             f"{'adaptive' if missing(off['steps']) else str(off['steps']) + ' steps'}"
             for off, _ in pairs]  # fmt: skip
    ax.set_yticks(pos, names, fontsize=8)
    ax.axvline(0, color="k", linewidth=0.8)
    ax.margins(x=0.3)
    ax.set(xlabel="FID with Tweedie minus FID without (< 0: denoising helped; grey: undecided)",
           title=title)  # fmt: skip
    return fig


def tile(images: torch.Tensor, nrow: int, pad_value) -> torch.Tensor:
    """(N, C, H, W) images -> one (height, width, 3) picture, ``nrow`` per row, each framed by
    1-pixel lines of ``pad_value``: torchvision's ``make_grid(..., padding=1)`` for two or more
    images (grey ones repeated to RGB), without importing torchvision (seconds of the report
    job, the DAG's last)."""
    n, c, h, w = images.shape
    images = images.expand(n, 3, h, w) if c == 1 else images
    cols = min(nrow, n)
    rows = -(-n // cols)
    grid = images.new_full((3, rows * (h + 1) + 1, cols * (w + 1) + 1), pad_value)
    for i, image in enumerate(images):
        top, left = 1 + (i // cols) * (h + 1), 1 + (i % cols) * (w + 1)
        grid[:, top:top + h, left:left + w] = image
    return grid.permute(1, 2, 0)


def plot_samples(images: torch.Tensor, title: str) -> Figure:
    """A grid of the first 64 uint8 samples."""
    grid = tile(images[:64], nrow=8, pad_value=255)
    fig = Figure(figsize=(4.4, 4.8), layout="constrained")
    ax = fig.subplots()
    ax.imshow(grid.numpy(), interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    return fig


def chosen_checkpoint(selection: pd.DataFrame) -> pd.Series:
    """The row select-checkpoint kept: its ``best`` column when present, else the lowest FID
    with ties going to the later step (``min(rows, key=(fid, -step))`` in stages/select.py)."""
    if "best" in selection:
        flag = selection["best"].map(lambda v: str(v).strip().lower() in ("true", "1"))
        if flag.sum() == 1:
            return selection[flag].iloc[0]
    order = selection.sort_values(["fid", "step"], ascending=[True, False], kind="stable")
    return order.iloc[0]


def plot_series(series: dict[str, pd.DataFrame], x: str, y: str, title: str, logy=False):
    """One line per SDE of ``y`` against ``x``; marks the minimum for checkpoint selection."""
    fig = Figure(figsize=(5.2, 3.8), layout="constrained")
    ax = fig.subplots()
    long = False
    for sde in sorted(series, key=sde_key):
        df = series[sde]
        long |= len(df) >= 100
        smooth = df[y].rolling(max(1, len(df) // 50), min_periods=1).mean()
        line = ax.plot(df[x], smooth, label=f"{sde_label(sde)} SDE",
                       marker="o" if len(df) < 30 else None)[0]  # fmt: skip
        if y == "fid":
            best = chosen_checkpoint(df)
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
    bars = ax.bar([f"{sde_label(s)} SDE" for s in nll["sde"]], nll["bpd"], yerr=sem, capsize=4,
                  color="tab:blue")  # fmt: skip
    ax.bar_label(bars, labels=[pm(b, s) for b, s in zip(nll["bpd"], nll["bpd_sem"], strict=True)],
                 fontsize=8, label_type="center", color="white")  # fmt: skip
    ax.set(ylabel="test bits/dim (lower is better)", title=title)
    return fig
