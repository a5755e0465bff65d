"""The report's inverse-problem figure: per task, rows measurement / reconstructions by each
method / ground truth (``controllable/{dataset}/{sde}/inverse/{task}_{method}.pt``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from scoresde.report.plots import tile

TASKS = ("superres", "deblur", "noisy-projection")
SHORT = {"superres": "low-res", "deblur": "blurred", "noisy-projection": "A^T y"}
MEASUREMENT = {"superres": "2x2 block means, upsampled", "deblur": "blurred",
               "noisy-projection": "back-projection A^T y"}


def image_grid(ax, images: torch.Tensor, title: str, cols: int) -> None:
    grid = tile(images.float() / 255.0, nrow=cols, pad_value=1.0)
    ax.imshow(grid.numpy().clip(0, 1), cmap="gray", interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def is_inverse(df: pd.DataFrame) -> pd.Series:
    return df["task"].isin(TASKS)


def plot_inverse(dataset: str, sde: str, base: Path, df: pd.DataFrame):
    """One panel per task (rows: measurement, each method's reconstructions, ground truth), or
    None without inverse-problem rows."""

    sub = df[is_inverse(df)]
    if sub.empty:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t in TASKS if t in set(sub["task"])]
    fig, axes = plt.subplots(1, len(tasks), figsize=(2.8 * len(tasks), 3.2), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        methods = list(dict.fromkeys(sub.loc[sub["task"] == task, "method"]))
        runs = [torch.load(base / "inverse" / f"{task}_{m}.pt", weights_only=True) for m in methods]
        n = min(8, len(runs[0]["truth"]))
        stack = [runs[0]["measurement"][:n], *(r["images"][:n] for r in runs), runs[0]["truth"][:n]]
        image_grid(ax, torch.cat(stack), f"{task}\nrows: {SHORT[task]}, {', '.join(methods)}, truth", n)
    fig.suptitle(f"{dataset}, {sde} SDE: linear inverse problems (held-out test images)", fontsize=10)
    fig.tight_layout()
    return fig


def caption(dataset: str, sde: str, df: pd.DataFrame) -> str:
    methods = ", ".join(dict.fromkeys(df.loc[is_inverse(df), "method"]))
    return (f"{dataset}, {sde} SDE: linear inverse problems y = A x + noise on test images; per "
            f"task, rows: the measurement ({'; '.join(f'{k}: {v}' for k, v in MEASUREMENT.items())}), "
            f"the reconstructions by {methods}, the ground truth.")
