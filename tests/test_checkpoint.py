"""Tests for scoresde.checkpoint: exact round trip, refusal of bad files, atomic writes."""

import ast
import os
import pickle
from pathlib import Path

import pytest
import torch

from scoresde.checkpoint import CheckpointError, atomic_write, load_checkpoint, save_checkpoint
from scoresde.models import EMA, UNet

SRC = Path(__file__).resolve().parents[1] / "src" / "scoresde"


class Evil:
    """Unpickling this would run a shell command creating `marker`."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def saved(tmp_path):
    net = UNet(8, 1, channels=8, channel_mult=(1, 2))
    state = {"model": net.state_dict(), "ema": EMA(net, 0.999).state_dict(), "step": 12,
             "lr": 2e-4, "note": "hi", "half": torch.arange(4, dtype=torch.bfloat16),
             "history": [torch.ones(2), 3]}
    config = {"model": {"arch": "unet", "channel_mult": [1, 2]}, "seed": 0}
    path = tmp_path / "ckpt" / "step_12.pt"
    save_checkpoint(path, state, config)
    return path, state, config


def test_round_trip_is_exact(saved):
    path, state, config = saved
    loaded, cfg = load_checkpoint(path)
    assert cfg == config
    assert loaded["step"] == 12 and loaded["lr"] == 2e-4 and loaded["note"] == "hi"
    for k, v in state["model"].items():
        assert torch.equal(loaded["model"][k], v)
    assert torch.equal(loaded["ema"]["shadow"]["conv_out.weight"],
                       state["ema"]["shadow"]["conv_out.weight"])
    assert loaded["half"].dtype == torch.bfloat16 and torch.equal(loaded["half"], state["half"])
    assert torch.equal(loaded["history"][0], torch.ones(2)) and loaded["history"][1] == 3
    assert os.listdir(path.parent) == [path.name]  # no temporary file left behind


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist.*train rule"):
        load_checkpoint(tmp_path / "nope.pt")


def test_truncated_file(saved):
    path, _, _ = saved
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=f"{path}.*truncated or corrupt.*delete it"):
        load_checkpoint(path)


@pytest.mark.parametrize("data", [b"", os.urandom(4096), b"PK\x03\x04garbage"])
def test_random_bytes(tmp_path, data):
    path = tmp_path / "bad.pt"
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match="delete it"):
        load_checkpoint(path)


def test_hash_mismatch(saved):
    path, _, _ = saved
    blob = torch.load(path, weights_only=True)
    blob["state"]["model"]["conv_in.weight"][0, 0, 0, 0] += 1.0
    torch.save(blob, path)
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(path)


def test_not_a_scoresde_checkpoint(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.ones(3)}, path)
    with pytest.raises(CheckpointError, match="not a scoresde checkpoint"):
        load_checkpoint(path)


@pytest.mark.parametrize("how", ["torch_zip", "raw_pickle"])
def test_pickle_with_code_is_refused_and_not_run(tmp_path, how):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = {"state": Evil(marker), "config_json": "{}", "sha256": ""}
    if how == "torch_zip":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(CheckpointError, match="refuses"):
        load_checkpoint(path)
    assert not marker.exists()


def test_save_rejects_objects_that_need_pickle(tmp_path):
    with pytest.raises(TypeError, match="only tensors"):
        save_checkpoint(tmp_path / "x.pt", {"obj": object()}, {})
    assert not list(tmp_path.iterdir())


def test_atomic_write_success_and_failure(tmp_path):
    path = tmp_path / "deep" / "dir" / "fig.png"
    with atomic_write(path) as tmp:
        assert tmp.parent == path.parent and tmp.name.endswith(".png") and tmp != path
        tmp.write_text("one")
    assert path.read_text() == "one"
    with pytest.raises(RuntimeError, match="boom"), atomic_write(path) as tmp:
        tmp.write_text("two")
        raise RuntimeError("boom")
    assert path.read_text() == "one"  # old content kept
    assert os.listdir(path.parent) == ["fig.png"]  # temp removed
    fresh = tmp_path / "never.txt"
    with pytest.raises(KeyError), atomic_write(fresh) as tmp:
        tmp.write_text("partial")
        raise KeyError("x")
    assert not fresh.exists() and not list(tmp_path.glob("*never*"))


def test_every_torch_load_in_the_package_is_weights_only():
    """Checkpoints must never be loaded as arbitrary pickles (DESIGN.md, known defects)."""
    offenders = []
    for file in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            owner = getattr(node.func.value, "id", None)
            if owner == "pickle" and node.func.attr in ("load", "loads", "Unpickler"):
                offenders.append(f"{file}:{node.lineno} pickle.{node.func.attr}")
            if owner == "torch" and node.func.attr == "load":
                safe = any(k.arg == "weights_only" and getattr(k.value, "value", None) is True
                           for k in node.keywords)
                if not safe:
                    offenders.append(f"{file}:{node.lineno} torch.load without weights_only=True")
    assert not offenders, offenders
