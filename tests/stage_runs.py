"""Running the first pipeline stages through the CLI, as the DAG lays their files out (shared by
the tests that need a trained checkpoint on disk)."""

from __future__ import annotations

from pathlib import Path

from scoresde.cli import main


def run(*args) -> int:
    """``python -m scoresde ARGS`` in this process; returns its exit code."""
    return main([str(a) for a in args])


def prepare_and_train(params: Path, data: Path, ck: Path, sde: str) -> None:
    """prepare-data into ``data/``, train-features into ``ck/fid_features.pt`` and train one
    SDE into ``ck/{sde}/`` (snapshots, train_log.csv, config.json), all with ``params``."""
    assert run("prepare-data", "--params", params, "--train-out", data / "train.pt",
               "--test-out", data / "test.pt", "--reference-out", data / "reference.pt",
               "--config-out", data / "config.json") == 0
    assert run("train-features", "--params", params, "--data", data / "train.pt", "--test",
               data / "test.pt", "--out", ck / "fid_features.pt", "--device", "cpu") == 0
    assert run("train", "--params", params, "--data", data / "train.pt", "--sde", sde,
               "--out-dir", ck / sde, "--log-csv", ck / f"{sde}/train_log.csv", "--config-out",
               ck / f"{sde}/config.json", "--threads", "1") == 0
