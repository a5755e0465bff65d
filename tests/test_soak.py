"""Soak (slow): the smoke DAG run twice from scratch gives identical numbers (once with
--cores 1, once with --cores 2), a third run executes no job; and a Snakemake run killed
during training resumes from its snapshot with --rerun-incomplete."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_workflow import BIN, snakemake, workdir  # noqa: F401  (fixture)

from scoresde.checkpoint import load_checkpoint

SMOKE = ("--configfile", ".test/params.yaml")
TIMING = {"seconds"}  # the only columns allowed to differ between runs


def _table(path: Path) -> list[dict]:
    with open(path) as f:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]


def _fresh_run(folder: Path, cores: str) -> dict:
    proc = snakemake("--cores", cores, *SMOKE, cwd=folder)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    tables = {name: _table(folder / "reports" / name)
              for name in ("metrics.csv", "likelihood.csv")}
    samples = {p.relative_to(folder): torch.load(p, weights_only=True)["images"]
               for p in sorted((folder / "samples").rglob("*.pt"))}
    for name in ("data", "checkpoints", "samples", "metrics", "reports", "logs", ".snakemake"):
        subprocess.run(["rm", "-rf", str(folder / name)], check=True)
    return {"tables": tables, "samples": samples}


@pytest.mark.slow
def test_two_fresh_runs_are_identical_and_a_third_does_nothing(workdir):  # noqa: F811
    first = _fresh_run(workdir, "1")
    second_proc = snakemake("--cores", "2", *SMOKE, cwd=workdir)
    assert second_proc.returncode == 0, second_proc.stderr[-3000:]
    third = snakemake("--cores", "2", *SMOKE, cwd=workdir)
    assert third.returncode == 0
    assert "Nothing to be done" in third.stdout + third.stderr
    assert "Select jobs to execute" not in third.stdout + third.stderr
    tables = {name: _table(workdir / "reports" / name)
              for name in ("metrics.csv", "likelihood.csv")}
    assert tables == first["tables"]
    for path, images in first["samples"].items():
        assert torch.equal(images, torch.load(workdir / path, weights_only=True)["images"]), path


LONGER = "train: {n_iters: 400, snapshot_every: 100}\nsde: {names: [vp]}\ncontrollable: {sdes: [vp]}\n"
TARGET = "checkpoints/digits/vp/config.json"


@pytest.mark.slow
def test_snakemake_killed_during_training_resumes(workdir, tmp_path_factory):  # noqa: F811
    (workdir / "longer.yaml").write_text(LONGER)
    args = (TARGET, "--cores", "1", *SMOKE, "longer.yaml")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    run = subprocess.Popen([sys.executable, "-m", "snakemake", *args], cwd=workdir, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    resume = workdir / "checkpoints/digits/vp/resume"
    deadline = time.monotonic() + 300
    while not (resume / "step_200.pt").exists() and time.monotonic() < deadline:
        assert run.poll() is None, "snakemake ended before it could be killed"
        time.sleep(0.01)
    os.killpg(run.pid, signal.SIGKILL)  # the node is gone: snakemake and its job
    run.wait()
    assert not (workdir / TARGET).exists()

    assert snakemake("--unlock", *args, cwd=workdir).returncode == 0
    again = snakemake("--rerun-incomplete", *args, cwd=workdir)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    log = (workdir / "logs/train/digits/vp.log").read_text()
    assert "resuming from step " in log

    reference = tmp_path_factory.mktemp("reference")
    for name in ("Snakefile", "params.yaml", "workflow", ".test", "longer.yaml", "profiles"):
        subprocess.run(["cp", "-r", str(workdir / name), str(reference / name)], check=True)
    assert snakemake(*args, cwd=reference).returncode == 0
    for k in (100, 200, 300, 400):
        ours, _ = load_checkpoint(workdir / f"checkpoints/digits/vp/step_{k}.pt")
        theirs, _ = load_checkpoint(reference / f"checkpoints/digits/vp/step_{k}.pt")
        torch.testing.assert_close(ours["ema"], theirs["ema"], rtol=0, atol=0)
        torch.testing.assert_close(ours["model"], theirs["model"], rtol=0, atol=0)
