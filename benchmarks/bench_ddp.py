"""Training throughput on one process against several (DistributedDataParallel), the real train
stage (``python -m scoresde train`` with ``train.processes``), at the same global batch.

CPU (gloo): 1 process x 1 thread, 1 process x 2 threads and 2 processes x 1 thread on the same
two cores. GPU (NCCL, only where CUDA is visible): 1 process on 1 GPU against one process per
visible GPU. Images/s come from the stage's own train_log.csv (``seconds`` column: wall time
inside the training loop, so interpreter start-up, data loading and process-group set-up are
left out) over the steps after the first ``log_every`` (warm-up). The variants run in
alternation, best of the rounds kept, so a load spike on a shared machine hits all alike.

    python benchmarks/bench_ddp.py [--quick]
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from benchlib import Report, Table, cli_main

ROOT = Path(__file__).resolve().parents[1]
PARAMS = "model: {{channels: 16, channel_mult: [1, 2]}}\n" \
         "train: {{n_iters: {n}, snapshot_every: {n}, batch_size: {batch}, log_every: {warm}}}\n"
NOT_MEASURED = ("GPU: not measured (no CUDA device on this machine). On a GPU machine this "
                "script adds rows '1 process, 1 GPU' and 'N processes, N GPUs (NCCL)' at the same "
                "global batch and their ratio: images/s on N GPUs / images/s on one.")


def prepare(work: Path) -> Path:
    """The processed digits split (what the pipeline's prepare_data writes)."""
    from scoresde.cli import main

    assert main([f"--{k}-out={work / k}.pt" if k else "prepare-data"
                 for k in ("", "train", "test", "reference")]) == 0
    return work / "train.pt"


def _env() -> dict:
    src = str(ROOT / "src")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}


def images_per_second(data: Path, work: Path, name: str, processes: int, threads: int,
                      device: str, n: int, batch: int, warm: int) -> float:
    """One training run of the stage; images/s over the steps after the first `warm`."""
    out = work / name
    (work / "params.yaml").write_text(PARAMS.format(n=n, batch=batch, warm=warm))
    subprocess.run([sys.executable, "-m", "scoresde", "train", "--params", work / "params.yaml",
                    "--data", data, "--sde", "vp", "--out-dir", out, "--log-csv",
                    out / "log.csv", "--config-out", out / "config.json", "--device", device,
                    "--threads", str(threads), "--set", f"train.processes={processes}"],
                   check=True, capture_output=True, env=_env())
    with open(out / "log.csv") as f:
        rows = list(csv.DictReader(f))
    first, last = rows[0], rows[-1]
    steps = int(last["step"]) - int(first["step"])
    return steps * batch / (float(last["seconds"]) - float(first["seconds"]))


def run(quick: bool = False) -> Report:
    n, batch, warm, rounds = (6, 16, 2, 1) if quick else (50, 128, 10, 2)
    variants = {"1 process x 1 thread (CPU)": (1, 1, "cpu"),
                "1 process x 2 threads (CPU)": (1, 2, "cpu"),
                "2 processes x 1 thread (CPU, gloo DDP)": (2, 2, "cpu")}
    if quick:  # each run starts its interpreters: keep the smoke test short
        del variants["1 process x 2 threads (CPU)"]
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus:
        variants["1 process, 1 GPU"] = (1, 1, "cuda")
        if gpus > 1:
            variants[f"{gpus} processes, {gpus} GPUs (NCCL DDP)"] = (gpus, gpus, "cuda")
    best: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = prepare(work)
        for r in range(rounds):
            names = list(variants)
            for name in names[r % len(names):] + names[:r % len(names)]:  # rotate the order
                speed = images_per_second(data, work, f"{len(best)}-{r}", *variants[name],
                                          n=n, batch=batch, warm=warm)
                best[name] = max(best.get(name, 0.0), speed)
    base_name = next(v for v in ("1 process x 2 threads (CPU)", "1 process x 1 thread (CPU)")
                     if v in best)
    base = best[base_name]
    rows = [[name, best[name], best[name] / base if "CPU" in name else
             best[name] / best["1 process, 1 GPU"]] for name in variants]
    notes = [f"the train stage on digits (default U-Net, 16 channels), VP, global batch {batch}, "
             f"{n} steps, the first {warm} left out; best of {rounds} alternating round(s); "
             f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end",
             f"ratio: images/s over '{base_name.split(' (')[0]}' (CPU rows, the same two cores) or over "
             "'1 process, 1 GPU' (GPU rows)"]
    if not gpus:
        notes.append(NOT_MEASURED)
    two = best["2 processes x 1 thread (CPU, gloo DDP)"]
    print(f"2 processes / {base_name}, images/s ratio: {two / base:.3f}", flush=True)
    report = Report("ddp")
    report.tables.append(Table("Training throughput, 1 vs several processes (the train stage)",
                               ["variant", "images/s", "ratio"], rows, notes))
    return report


if __name__ == "__main__":
    cli_main(run, __doc__)
