"""Which figures the report draws, from which inputs, and writing them as PNG files.

A figure builder is a function ``(data: ReportData, dataset: str) -> {name: (Figure, caption)}``
that returns nothing when its inputs are missing. ``FIGURE_BUILDERS`` lists them in the order the
report shows them; :func:`expected_figures` lists the same figures for the workflow, which
declares them as the report rule's outputs (keep the two in step when adding a builder).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch
from matplotlib.figure import Figure

from scoresde.checkpoint import atomic_write
from scoresde.report.formatting import fmt
from scoresde.report.load import ReportData, case_text, sde_key, sde_label
from scoresde.report.nfe import plot_fid_vs_nfe_panels
from scoresde.report.plots import plot_bpd, plot_fid_curves, plot_samples, plot_series, plot_tweedie


def figure_name(kind: str, dataset: str, sde: str | None = None) -> str:
    """File stem of a figure: ``{kind}_{dataset}``, or ``{kind}_{dataset}_{sde}`` per SDE."""
    return f"{kind}_{dataset}" + (f"_{sde}" if sde else "")


def expected_figures(dataset: str, sdes: Sequence[str], tweedie: bool) -> list[tuple]:
    """(name, kind, sde or None) of every figure :func:`make_figures` writes from complete inputs.

    Complete: an FID result per case and a likelihood result per SDE, each SDE's training log,
    selection table and samples. ``tweedie``: the sweep runs cases both with and without the
    final denoising step. The workflow declares exactly these files as the report's outputs.
    """
    kinds = [("fid_vs_steps", None), ("fid_vs_nfe", None)] + [("tweedie", None)] * tweedie
    kinds += [("samples", sde) for sde in sorted(sdes, key=sde_key)]
    kinds += [("bpd", None), ("loss", None), ("selection", None)]
    return [(figure_name(kind, dataset, sde), kind, sde) for kind, sde in kinds]


def png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def read_csv_if(path: Path, needed: Sequence[str]) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    df = pd.read_csv(path)
    return df if set(needed) <= set(df.columns) and len(df) else None


def load_images(path: Path) -> torch.Tensor | None:
    if not path.is_file():
        return None
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or "images" not in blob:
        raise ValueError(f"samples file {path} lacks an 'images' tensor")
    images = blob["images"]
    if images.is_floating_point():  # tolerate [0, 1] floats; the agreed format is uint8
        images = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    return images if images.ndim == 4 else None


_HOW = "colour: sampler; dashed, open squares: with the final Tweedie denoising step"


def fid_curve_figures(data: ReportData, dataset: str) -> dict:
    fid, _ = data.of(dataset)
    if not len(fid):
        return {}
    level = f"{data.confidence:.0%}"
    title = f"{dataset}: FID vs sampler steps"
    caption = (f"{dataset}: FID against the number of sampler steps, one panel per SDE ({_HOW}; "
               f"bars: {level} bootstrap interval). Adaptive ODE solvers have no step count: see "
               "FID vs NFE.")  # fmt: skip
    figs = {figure_name("fid_vs_steps", dataset):
            (plot_fid_curves(fid, "steps", title, data.confidence), caption)}  # fmt: skip
    title = f"{dataset}: FID vs NFE"
    caption = (f"{dataset}: FID against the number of score-network evaluations (NFE) per "
               f"sample, one panel per SDE ({_HOW}; bars: {level} bootstrap interval); black: the "
               "longest PC run, dotted: 1.2x and 1.8x its FID (the fast-sampler goal).")  # fmt: skip
    figs[figure_name("fid_vs_nfe", dataset)] = (
        plot_fid_vs_nfe_panels(fid, title, confidence=data.confidence), caption)
    return figs


def tweedie_figure(data: ReportData, dataset: str) -> dict:
    fid, _ = data.of(dataset)
    title = f"{dataset}: effect of Tweedie denoising on FID"
    caption = (f"{dataset}: change of FID from the final Tweedie denoising step for every case run "
               f"both ways, with the {data.confidence:.0%} paired-bootstrap interval of the change "
               "(green: lower FID with denoising, red: higher, grey: undecided; labels: FID "
               "without -> with).")  # fmt: skip
    fig = plot_tweedie(fid, title, data.confidence) if len(fid) else None
    return {figure_name("tweedie", dataset): (fig, caption)} if fig is not None else {}


def sample_figures(data: ReportData, dataset: str) -> dict:
    """The first 64 samples of each SDE's lowest-FID case whose samples file exists."""
    fid, _ = data.of(dataset)
    if data.samples_dir is None or not len(fid):
        return {}
    figs = {}
    for sde in sorted(set(fid["sde"]), key=sde_key):
        sub = fid[(fid["sde"] == sde) & fid["fid"].notna()]
        for r in sub.sort_values("fid", kind="stable").to_dict("records"):
            images = load_images(Path(data.samples_dir, dataset, sde, f"{r['case']}.pt"))
            if images is not None:
                title = (f"{dataset}, {sde_label(sde)} SDE: lowest FID ({fmt(r['fid'])})\n"
                         f"{case_text(r)}")  # fmt: skip
                caption = (f"{dataset}, {sde_label(sde)} SDE: the first {min(64, len(images))} "
                           f"samples of the case with the lowest FID ({fmt(r['fid'])}): "
                           f"{case_text(r)}.")  # fmt: skip
                figs[figure_name("samples", dataset, sde)] = (plot_samples(images, title), caption)
                break
    return figs


def bpd_figure(data: ReportData, dataset: str) -> dict:
    _, nll = data.of(dataset)
    if not len(nll):
        return {}
    title = f"{dataset}: test bits/dim per SDE"
    caption = (f"{dataset}: test-set bits/dim per SDE from the probability-flow ODE, with one "
               "standard error over the test images.")  # fmt: skip
    return {figure_name("bpd", dataset): (plot_bpd(nll, title), caption)}


def checkpoint_figures(data: ReportData, dataset: str) -> dict:
    """Training loss and checkpoint selection from the checkpoints' CSV logs."""
    if data.checkpoints_dir is None:
        return {}
    fid, nll = data.of(dataset)
    logs, sels = {}, {}
    for sde in sorted(set(fid["sde"]) | set(nll["sde"]), key=sde_key):
        base = Path(data.checkpoints_dir, dataset, sde)
        if (df := read_csv_if(base / "train_log.csv", ["step", "loss"])) is not None:
            logs[sde] = df
        if (df := read_csv_if(base / "selection.csv", ["step", "fid"])) is not None:
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
                   "circled point of each SDE is the checkpoint kept as best.pt (on a tie, the "
                   "later step, as select-checkpoint keeps it).")  # fmt: skip
        figs[figure_name("selection", dataset)] = (plot_series(sels, "step", "fid", title), caption)
    return figs


# The report's figures, in order. Add a builder here (and its names to expected_figures).
FIGURE_BUILDERS = (fid_curve_figures, tweedie_figure, sample_figures, bpd_figure, checkpoint_figures)


def make_figures(data: ReportData, fig_dir, builders=FIGURE_BUILDERS) -> list[dict]:
    """Write every figure as ``fig_dir/{name}.png``; returns [{name, path, caption, png}]."""
    out = []
    for dataset in data.datasets():
        for builder in builders:
            for name, (fig, caption) in builder(data, dataset).items():
                png, path = png_bytes(fig), Path(fig_dir, f"{name}.png")
                with atomic_write(path) as tmp:
                    Path(tmp).write_bytes(png)
                out.append({"name": name, "path": path, "caption": caption, "png": png})
    return out
