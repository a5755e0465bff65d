"""The report's data files: metrics.csv, likelihood.csv, and for DVC metrics.json,
fid_vs_steps.csv and train_loss.csv."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from scoresde.checkpoint import atomic_write
from scoresde.report.bounds import LIKELIHOOD_COLUMNS, bound_rows
from scoresde.report.figures import read_csv_if
from scoresde.report.formatting import missing
from scoresde.report.load import FID_COLUMNS, sde_key


def write_text(path: Path, text: str) -> None:
    with atomic_write(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def write_csvs(fid, nll, out_dir: Path, confidence: float = 0.95) -> tuple[Path, Path]:
    """metrics.csv (one row per case) and likelihood.csv (one row per SDE and bound)."""
    paths = out_dir / "metrics.csv", out_dir / "likelihood.csv"
    bounds = bound_rows(nll, confidence)
    for df, cols, path in ((fid, FID_COLUMNS, paths[0]), (bounds, LIKELIHOOD_COLUMNS, paths[1])):
        with atomic_write(path) as tmp:
            df[cols].to_csv(tmp, index=False)
    return paths


def flat_metrics(fid: pd.DataFrame, nll: pd.DataFrame) -> dict[str, float | None]:
    """``{dataset}/{sde}/{case}/fid`` and ``/kid`` per case, ``{dataset}/{sde}/bpd`` per SDE (the
    paper's uniform bound) and ``{dataset}/{sde}/bpd_{method}`` per further bound on log P(k)."""
    out: dict[str, float | None] = {}
    for r in fid.to_dict("records"):
        for key in ("fid", "kid"):
            out[f"{r['dataset']}/{r['sde']}/{r['case']}/{key}"] = _number(r[key])
    for r in nll.to_dict("records"):
        out[f"{r['dataset']}/{r['sde']}/bpd"] = _number(r["bpd"])
        for b in r.get("bounds") if isinstance(r.get("bounds"), list) else []:
            if b.get("method") != "uniform":  # uniform is ``bpd``
                out[f"{r['dataset']}/{r['sde']}/bpd_{b['method']}"] = _number(b.get("bpd"))
    return out


def _number(value) -> float | None:
    return None if missing(value) else float(value)


def train_loss_table(datasets: Sequence[str], sdes: Sequence[str], checkpoints_dir) -> pd.DataFrame:
    """``step`` plus one loss column per SDE (``{dataset}/{sde}`` for several datasets)."""
    table = None
    for dataset in datasets:
        for sde in sdes:
            df = read_csv_if(Path(checkpoints_dir, dataset, sde, "train_log.csv"), ["step", "loss"])
            if df is None:
                continue
            name = sde if len(datasets) == 1 else f"{dataset}/{sde}"
            df = df[["step", "loss"]].rename(columns={"loss": name})
            table = df if table is None else table.merge(df, on="step", how="outer")
    if table is None:
        return pd.DataFrame(columns=["step"])
    return table.sort_values("step", kind="stable").reset_index(drop=True)


def write_dvc_files(fid, nll, out_dir: Path, checkpoints_dir) -> dict[str, Path]:
    paths = {"metrics_json": out_dir / "metrics.json", "fid_vs_steps_csv": out_dir / "fid_vs_steps.csv",
             "train_loss_csv": out_dir / "train_loss.csv"}  # fmt: skip
    write_text(paths["metrics_json"], json.dumps(flat_metrics(fid, nll), indent=2) + "\n")
    curves = fid.assign(series=fid["sde"] + "/" + fid["sampler"] + "/"
                        + fid["denoise"].map({True: "tweedie", False: "none"}))  # fmt: skip
    cols = ["dataset", "sde", "sampler", "denoise", "series", "case", "steps", "nfe", "fid", "kid"]
    with atomic_write(paths["fid_vs_steps_csv"]) as tmp:
        curves[cols].to_csv(tmp, index=False)
    datasets = sorted(set(fid["dataset"]) | set(nll["dataset"]))
    sdes = sorted(set(fid["sde"]) | set(nll["sde"]), key=sde_key)
    loss = train_loss_table(datasets, sdes, checkpoints_dir) if checkpoints_dir else None
    with atomic_write(paths["train_loss_csv"]) as tmp:
        (loss if loss is not None else pd.DataFrame(columns=["step"])).to_csv(tmp, index=False)
    return paths
