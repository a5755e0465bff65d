"""The train stage: resume after a kill or SIGTERM (bit-identical on CPU), non-finite loss,
bad architectures and a full disk, each ending in one clear message."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from scoresde.checkpoint import load_checkpoint
from scoresde.cli import EXIT_PREEMPTED, main

PARAMS = """
model: {channels: 8, channel_mult: [1, 2]}
train: {n_iters: 60, snapshot_every: 20, batch_size: 64, log_every: 5, warmup: 5}
"""


def run(*args) -> int:
    return main([str(a) for a in args])


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("train")
    (d / "params.yaml").write_text(PARAMS)
    assert run("prepare-data", "--params", d / "params.yaml", "--train-out", d / "train.pt",
               "--test-out", d / "test.pt", "--reference-out", d / "reference.pt",
               "--config-out", d / "data.json") == 0
    return d


def train_args(data: Path, out: Path, *sets: str) -> list:
    extra = [a for s in sets for a in ("--set", s)]
    return ["train", "--params", data / "params.yaml", "--data", data / "train.pt", "--sde",
            "vp", "--out-dir", out, "--log-csv", out / "train_log.csv", "--config-out",
            out / "config.json", "--threads", "1", "--device", "cpu", *extra]


@pytest.fixture(scope="module")
def reference(data) -> Path:
    """An uninterrupted run."""
    out = data / "reference"
    assert run(*train_args(data, out)) == 0
    return out


def assert_same_training(a: Path, b: Path) -> None:
    for k in (20, 40, 60):
        sa, ca = load_checkpoint(a / f"step_{k}.pt")
        sb, cb = load_checkpoint(b / f"step_{k}.pt")
        assert ca == cb
        for key in ("model", "optimizer", "ema", "rng"):
            torch.testing.assert_close(sa[key], sb[key], rtol=0, atol=0)  # bit-identical
    losses = [line.split(",")[:2] for line in (a / "train_log.csv").read_text().splitlines()]
    assert losses == [line.split(",")[:2]
                      for line in (b / "train_log.csv").read_text().splitlines()]


def snakemake_cleanup(out: Path) -> None:
    """What Snakemake does to a failed job's outputs before the rerun."""
    for name in ("step_20.pt", "step_40.pt", "step_60.pt", "train_log.csv", "config.json"):
        (out / name).unlink(missing_ok=True)


def start_and_signal(data: Path, out: Path, sig: int) -> subprocess.CompletedProcess:
    """Start training in a real process; send `sig` once the first snapshot exists."""
    cmd = [sys.executable, "-m", "scoresde", *map(str, train_args(data, out))]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600  # generous: a loaded machine trains slowly
    while not (out / "resume/step_20.pt").exists() and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.005)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(cmd, proc.returncode, "", stderr)


def test_sigkill_then_rerun_resumes_bit_identically(data, reference, capsys):
    out = data / "killed"
    proc = start_and_signal(data, out, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (out / "config.json").exists()  # the job did not complete
    snakemake_cleanup(out)
    assert sorted(p.name for p in (out / "resume").glob("*.pt"))[0] == "step_20.pt"
    assert run(*train_args(data, out)) == 0
    assert "resuming from step " in capsys.readouterr().err
    assert_same_training(reference, out)
    assert not (out / "resume").exists()  # removed once training is done
    assert not list(out.glob(".tmp-*"))


def test_sigterm_writes_a_snapshot_and_exits_cleanly(data, reference, capsys):
    out = data / "terminated"
    proc = start_and_signal(data, out, signal.SIGTERM)
    assert proc.returncode == EXIT_PREEMPTED, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("stopped: SIGTERM at step ") and "Traceback" not in proc.stderr
    step = int(last.split("at step ")[1].split(":")[0])
    assert 20 <= step < 60
    snakemake_cleanup(out)
    assert run(*train_args(data, out)) == 0
    assert f"resuming from step {step} " in capsys.readouterr().err
    assert_same_training(reference, out)


def test_crash_between_snapshots_resumes_from_the_newest(data, reference, monkeypatch, capsys):
    out = data / "crashed"
    undo = crash_at(50, monkeypatch)
    with pytest.raises(RuntimeError, match="node lost"):
        run(*train_args(data, out))
    undo()
    snakemake_cleanup(out)
    assert run(*train_args(data, out)) == 0
    assert "resuming from step 40 " in capsys.readouterr().err
    assert_same_training(reference, out)


def crash_at(step: int, monkeypatch):
    """Make the train stage die (as a lost node would) before `step`; returns the undo."""
    from scoresde.stages.train import loop

    real = loop.train_step

    def crash(*args):
        if args[7] == step:
            raise RuntimeError("node lost")
        return real(*args)

    monkeypatch.setattr(loop, "train_step", crash)
    return lambda: monkeypatch.setattr(loop, "train_step", real)


def test_resume_state_of_other_parameters_is_not_used(data, monkeypatch, capsys):
    out = data / "changed"
    undo = crash_at(30, monkeypatch)
    with pytest.raises(RuntimeError, match="node lost"):
        run(*train_args(data, out))
    undo()
    assert (out / "resume/step_20.pt").exists()
    snakemake_cleanup(out)
    assert run(*train_args(data, out, "train.lr=0.0001")) == 0
    err = capsys.readouterr().err
    assert "resuming" not in err and "written by a run with other parameters" in err
    assert load_checkpoint(out / "step_60.pt")[1]["train"]["lr"] == 0.0001


def test_non_finite_loss_names_the_step_and_last_snapshot(data, monkeypatch, capsys):
    from scoresde import losses

    out = data / "nan"
    real, calls = losses.dsm_loss, []

    def nan_at_25(*args, **kwargs):
        calls.append(1)
        loss = real(*args, **kwargs)
        return loss * float("nan") if len(calls) == 25 else loss

    monkeypatch.setattr(losses, "dsm_loss", nan_at_25)
    assert run(*train_args(data, out)) == 2
    message = capsys.readouterr().err
    assert "training loss became nan at step 25" in message
    assert f"last good snapshot: {out / 'step_20.pt'}" in message
    assert not (out / "config.json").exists()


def test_full_disk_while_writing_a_snapshot(data, monkeypatch, capsys):
    import scoresde.checkpoint as ckpt

    out = data / "full"

    def half_written(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"PK\x03\x04 partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))

    monkeypatch.setattr(ckpt.torch, "save", half_written)
    assert run(*train_args(data, out)) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert not list(out.rglob("*.pt"))  # neither the snapshot nor its temporary file


@pytest.mark.parametrize(
    "sets, words",
    [(["model.channel_mult=[1,2,2,2,2]"], "model.image_size=8 cannot be halved 4 times"),
     (["model.attn_resolutions=[3]"], "model.attn_resolutions has [3]"),
     (["train.n_iters=0"], "train.n_iters")],
)
def test_architectures_the_images_cannot_take(data, tmp_path, capsys, sets, words):
    assert run(*train_args(data, tmp_path / "out", *sets)) == 2
    assert words in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_of_another_architecture_is_refused(data, reference, tmp_path):
    from scoresde.checkpoint import save_checkpoint
    from scoresde.stages.common import StageError, load_score_model

    state, config = load_checkpoint(reference / "step_60.pt")
    config["model"]["channels"] = 16  # the config claims a wider network than the weights
    save_checkpoint(tmp_path / "other.pt", state, config)
    with pytest.raises(StageError, match="do not fit the architecture"):
        load_score_model(tmp_path / "other.pt", torch.device("cpu"))


def test_an_empty_dataset_is_refused(tmp_path):
    from scoresde.data import DataError
    from scoresde.stages.common import load_split

    torch.save({"x": torch.zeros(0, 1, 8, 8, dtype=torch.uint8), "labels": torch.zeros(0),
                "levels": 17, "name": "digits"}, tmp_path / "train.pt")
    with pytest.raises(DataError, match="holds no uint8 images"):
        load_split(tmp_path / "train.pt")


def test_class_conditional_batches_drop_labels_at_the_set_rate():
    """model_batch of a class-conditional run: labels of the drawn images, each replaced by
    "no label" (K) with probability label_dropout (binomial bounds), drawn after the images
    so that the images are those of an unconditional run with the same generator."""
    from scoresde.stages.train.loop import class_conditional, class_conditional_params, model_batch

    k = torch.randint(0, 17, (500, 1, 8, 8), dtype=torch.uint8)
    labels = torch.arange(500) % 10
    meta = {"levels": 17, "centered": True, "dequantize": True,
            "class_conditional": {"num_classes": 10, "label_dropout": 0.2}}
    x, y = model_batch(k, meta, 4000, torch.Generator().manual_seed(0), labels)
    x_plain = model_batch(k, meta, 4000, torch.Generator().manual_seed(0))
    torch.testing.assert_close(x, x_plain)
    dropped = float((y == 10).float().mean())
    assert abs(dropped - 0.2) < 4 * (0.2 * 0.8 / 4000) ** 0.5
    kept = y != 10
    idx = torch.randint(500, (4000,), generator=torch.Generator().manual_seed(0))
    assert torch.equal(y[kept], labels[idx][kept])
    job = {"train": {"n_iters": 50, "snapshot_every": 10, "seed": 0, "lr": 1e-3},
           "model": {}, "controllable": {"free": {"n_iters": None, "label_dropout": 0.3, "seed": 4}}}
    params = class_conditional_params(job)
    assert params["train"] == {"n_iters": 50, "snapshot_every": 50, "seed": 4, "lr": 1e-3,
                               "label_dropout": 0.3} and "controllable" not in params
    split = {"name": "digits", "labels": labels}
    assert class_conditional(params, split) == {"num_classes": 10, "label_dropout": 0.3}
    assert class_conditional(job, split) is None
