"""The report's controllable-generation section: reports/controllable.csv, one figure per SDE
(class-conditional samples, one row per class; masked inputs / completions / ground truth per
mask and method), the metrics table, and ``{dataset}/{sde}/controllable/...`` entries merged into
reports/metrics.json for DVC. The paper makes no numeric claim here; the numbers are ours."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch

from scoresde.report.inverse import caption as inverse_caption
from scoresde.report.inverse import image_grid as _grid
from scoresde.report.inverse import plot_inverse

COLUMNS = ["dataset", "sde", "task", "case", "mask", "method", "class", "class_name", "n", "steps", "nfe",
           "accuracy", "fid", "psnr", "ssim", "noise_std", "residual", "seconds"]

_NOTE = (
    "Controllable generation (paper section 5, App. I); the paper reports no numbers for it, so "
    "these are ours. Class-conditional: classifier guidance (the score plus scale times the "
    "gradient of a noise-conditional classifier trained for the same SDE; scale 1 = Bayes' rule) "
    "and classifier-free guidance ((1 + w) s(x, t | y) - w s(x, t) with a class-conditional "
    "network trained with label dropout), each at the strength chosen on held-out test images "
    "(the lowest FID among the strengths reaching the target accuracy); accuracy = fraction of "
    "samples of class k that the pipeline's {classifier} (the FID feature extractor) labels k, "
    "with its Wilson interval; FID, precision and recall per class against that class's "
    "training images (few samples: biased upwards, compare only within this table), beside the "
    "unconditional samples of the same sampler that the classifier puts in that class. "
    "Inpainting of held-out test images: replace = the paper's imputation (biased "
    "even with the exact score), repaint = with RePaint's resampling, smc = MCGDiff particles "
    "(asymptotically exact); PSNR over the missing pixels, SSIM over the whole image (5x5 "
    "Gaussian window), FID of the completions against the reference set. Colorization (RGB "
    "datasets, App. I.3): the same methods in the decoupled colour space with the grey channel "
    "observed; PSNR over all pixels. Linear inverse problems y = A x + noise_std n on test images "
    "(superres = 2x2 block means, deblur = Gaussian blur, noisy-projection = random orthonormal "
    "directions): dps (Chung et al. 2023), pigdm (Song et al. 2023), smc = MCGDiff particles; "
    "PSNR and SSIM over the whole image, residual = RMS of A x - y in model space (about "
    "noise_std for a draw consistent with the measurement), FID of the reconstructions.")


def note(datasets: Sequence[str]) -> str:
    """The section's text, naming the classifier of the dataset(s) shown."""
    names = list(dict.fromkeys(datasets)) or ["dataset"]
    which = " / ".join(names) + (" classifier" if len(names) == 1 else " classifiers")
    return _NOTE.format(classifier=which)


def load_rows(files: Sequence[str | os.PathLike]) -> pd.DataFrame:
    rows = []
    for path in files:
        rows += json.loads(Path(path).read_text())["rows"]
    df = pd.DataFrame(rows)
    for col in COLUMNS:
        if col not in df:
            df[col] = None
    df["class"] = df["class"].astype("Int64")  # whole numbers; empty where no class
    return df[COLUMNS]


def plot_sde(dataset: str, sde: str, base: Path, df: pd.DataFrame):
    """Left: conditional samples, one row per class. Right: per mask, the masked inputs, each
    method's completions and the ground truth, one row each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    cond = base / "conditional.pt"
    if cond.is_file():
        obj = torch.load(cond, weights_only=True)
        labels = obj["labels"]
        per = min(int((labels == 0).sum()), 8)
        shown = [m for m in ("classifier", "free") if m in obj] or ["images"]
        for method in shown:
            rows = [obj[method][labels == k][:per] for k in sorted(set(labels.tolist()))]
            panels.append((f"{method} guidance (row k = class k)", torch.cat(rows), per))
        if "unconditional" in obj:
            u, u_labels = obj["unconditional"], obj["unconditional_labels"]
            rows = [u[u_labels == k][:per] for k in sorted(set(labels.tolist()))]
            if all(len(r) == per for r in rows):
                panels.append(("unconditional, sorted by the feature classifier", torch.cat(rows),
                               per))
    inputs = base / "inpaint" / "inputs.pt"
    if inputs.is_file():
        shown = torch.load(inputs, weights_only=True)
        n = min(8, len(shown["truth"]))
        for mask in dict.fromkeys(df.loc[df["task"] == "inpaint", "mask"]):
            stack = [shown[f"masked_{mask}"][:n]]
            methods = df.loc[(df["task"] == "inpaint") & (df["mask"] == mask), "method"]
            for method in methods:
                path = base / "inpaint" / f"{mask}_{method}.pt"
                stack.append(torch.load(path, weights_only=True)["images"][:n])
            stack.append(shown["truth"][:n])
            panels.append((f"{mask} mask", torch.cat(stack), n))
    colour = base / "colorize" / "inputs.pt"
    if colour.is_file():  # RGB datasets: grey input, each method's colours, ground truth
        shown = torch.load(colour, weights_only=True)
        n = min(8, len(shown["truth"]))
        methods = df.loc[df["task"] == "colorize", "method"]
        stack = [shown["grey"][:n], *(torch.load(base / "colorize" / f"{m}.pt",
                                                 weights_only=True)["images"][:n]
                                      for m in methods), shown["truth"][:n]]  # fmt: skip
        panels.append(("colorization", torch.cat(stack), n))
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 3.2), squeeze=False)
    for ax, (title, images, cols) in zip(axes[0], panels, strict=True):
        _grid(ax, images, title, cols)
    fig.suptitle(f"{dataset}, {sde} SDE: controllable generation", fontsize=10)
    fig.tight_layout()
    return fig


def plt_close(fig) -> None:
    import matplotlib.pyplot as plt

    plt.close(fig)


def _base(path) -> Path:
    """controllable/{dataset}/{sde}/ of a metrics file (inverse problems' lie in inverse/)."""
    path = Path(path)
    return path.parent.parent if path.parent.name == "inverse" else path.parent


def _save(fig, out_dir: Path, name: str, caption: str) -> dict | None:
    from scoresde.checkpoint import atomic_write

    if fig is None:
        return None
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt_close(fig)
    path = out_dir / "figures" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        Path(tmp).write_bytes(buf.getvalue())
    return {"name": name, "png": buf.getvalue(), "path": path, "caption": caption}


def flat_metrics(df: pd.DataFrame) -> dict:
    out = {}
    for r in df.to_dict("records"):
        key = f"{r['dataset']}/{r['sde']}/controllable/{r['task']}/{r['case'].replace(' / ', '_')}"
        for metric in ("accuracy", "fid", "psnr", "ssim", "residual"):
            value = r.get(metric)
            if value is not None and not pd.isna(value):
                out[f"{key}/{metric}"] = float(value)
    return out


def row_names(df: pd.DataFrame) -> str:
    """How the conditional samples' rows are named: by class name where the data has them."""
    named = df[(df["task"] == "conditional") & df["class"].notna() & df["class_name"].notna()]
    if named.empty:
        return "row k = class k"
    pairs = named.sort_values("class")[["class", "class_name"]].drop_duplicates()
    return "rows: " + ", ".join(f"{int(k)} = {name}" for k, name in pairs.itertuples(index=False))


def controllable_section(files: Sequence, out_dir) -> dict:
    """Write controllable.csv and the figures, merge the DVC metrics; returns
    ``{"section": Section, "figures": [figure dicts]}`` for the report."""
    from scoresde.checkpoint import atomic_write
    from scoresde.report import guidance
    from scoresde.report.sections import Section

    out_dir = Path(out_dir)
    conditional = guidance.load(files)
    df = load_rows(files)
    with atomic_write(out_dir / "controllable.csv") as tmp:
        df.to_csv(tmp, index=False)
    metrics_json = out_dir / "metrics.json"
    merged = json.loads(metrics_json.read_text()) if metrics_json.is_file() else {}
    merged.update(flat_metrics(df))
    with atomic_write(metrics_json) as tmp:
        Path(tmp).write_text(json.dumps(merged, indent=2) + "\n")
    figures = []
    bases = {(r["dataset"], r["sde"]): _base(path)  # the samples lie beside the metrics
             for path in files for r in json.loads(Path(path).read_text())["rows"]}
    for (dataset, sde), sub in df.groupby(["dataset", "sde"], sort=False):
        base = bases[(dataset, sde)]
        completion = sub[sub["task"].isin(["inpaint", "colorize"])]
        figures.append(_save(plot_sde(dataset, sde, base, sub), out_dir, f"controllable_{dataset}_{sde}",
                             f"{dataset}, {sde} SDE: class-conditional samples ({row_names(sub)}) "
                             "and, per mask, rows: masked input (missing = black), "
                             f"completions by {', '.join(dict.fromkeys(completion['method'].dropna()))}, "
                             "ground truth (test images); for RGB data also the grey "
                             "inputs, their colorizations and the truth."))
        figures.append(_save(plot_inverse(dataset, sde, base, sub), out_dir,
                             f"inverse_{dataset}_{sde}", inverse_caption(dataset, sde, sub)))
    for obj in conditional:
        row = obj["rows"][0]
        figures.append(_save(guidance.plot(obj), out_dir, f"guidance_{row['dataset']}_{row['sde']}",
                             guidance.caption(obj)))
    figures = [f for f in figures if f is not None]
    rest = df[df["task"] != "conditional"]
    table = rest.drop(columns=["dataset"]).dropna(axis=1, how="all").round(4)
    blocks = [("text", note(df["dataset"]))]
    if conditional:
        blocks += [("text", guidance.verdicts(conditional)), ("table", guidance.table(conditional))]
    return {"section": Section("Controllable generation", [*blocks, ("table", table)]),
            "figures": figures}
