"""How the numbers were produced: git commit, package versions, hardware, wall time per job."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
from collections.abc import Sequence
from datetime import datetime, timezone
from importlib import metadata

import pandas as pd
import torch
import yaml

from scoresde.report.formatting import fmt


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
                     "max RSS (MB)": fmt(rss)})  # fmt: skip
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
