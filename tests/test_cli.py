"""Every `python -m scoresde` stage on tiny inputs, and its error messages for bad input."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from stage_runs import prepare_and_train, run

ROOT = Path(__file__).resolve().parents[1]
TINY = """
data: {n_test: 6, n_reference: 64}
model: {channels: 8, channel_mult: [1, 2]}
train: {n_iters: 6, snapshot_every: 3, batch_size: 16, log_every: 2, warmup: 2}
select: {n_samples: 16, steps: 3}
sample: {n_samples: 12, batch_size: 12, steps: [3]}
eval:
  features: {epochs: 1}
  likelihood: {n_images: 4, rtol: 1.0e-2, atol: 1.0e-2}
report: {title: tiny}
"""
FID_FIELDS = {"dataset", "sde", "sampler", "predictor", "corrector", "steps", "denoise", "nfe",
              "seconds", "n_samples", "fid", "kid", "kid_std", "feature_extractor", "precision",
              "recall", "density", "coverage", "memorised", "copy_z"}
NLL_FIELDS = {"dataset", "sde", "bpd", "bpd_sem", "nfe", "n_images", "divergence", "n_probes",
              "rtol", "atol"}


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Runs every stage once, in order, on tiny settings (VE only); returns the folder."""
    d = tmp_path_factory.mktemp("pipeline")
    p = d / "params.yaml"
    p.write_text(TINY)
    data, ckpt = d / "data", d / "checkpoints"
    prepare_and_train(p, data, ckpt, "ve")
    assert run("select-checkpoint", "--params", p, "--checkpoints", ckpt / "ve/step_3.pt",
               ckpt / "ve/step_6.pt", "--reference", data / "reference.pt", "--extractor",
               ckpt / "fid_features.pt", "--best", ckpt / "ve/best.pt", "--table",
               ckpt / "ve/selection.csv", "--config-out", ckpt / "ve/selection.json",
               "--sde", "ve") == 0
    cases = ["pc_3_tweedie", "ode-rk45_adaptive_tweedie"]
    for case in cases:
        sampler, steps, denoise = case.split("_")
        assert run("sample", "--params", p, "--checkpoint", ckpt / "ve/best.pt", "--sde", "ve",
                   "--sampler", sampler, "--steps", steps, "--denoise", denoise, "--out",
                   d / f"samples/digits/ve/{case}.pt", "--meta",
                   d / f"samples/digits/ve/{case}.json") == 0
    assert run("fid", "--params", p,
               "--samples", *[d / f"samples/digits/ve/{c}.pt" for c in cases],
               "--meta", *[d / f"samples/digits/ve/{c}.json" for c in cases],
               "--reference", data / "reference.pt", "--extractor", ckpt / "fid_features.pt",
               "--train", data / "train.pt", "--test", data / "test.pt",
               "--out", *[d / f"metrics/digits/ve/fid/{c}.json" for c in cases]) == 0
    assert run("check-metrics", "--params", p, "--train", data / "train.pt", "--test",
               data / "test.pt", "--reference", data / "reference.pt", "--extractor",
               ckpt / "fid_features.pt", "--out", d / "metrics/digits/metric_checks.json") == 0
    assert run("likelihood", "--params", p, "--checkpoint", ckpt / "ve/best.pt", "--data",
               data / "test.pt", "--out", d / "metrics/digits/ve/nll.json", "--sde", "ve") == 0
    assert run("report", "--params", p, "--fid", *sorted((d / "metrics").rglob("fid/*.json")),
               "--nll", d / "metrics/digits/ve/nll.json", "--out-dir", d / "reports",
               "--checkpoints-dir", ckpt, "--samples-dir", d / "samples",
               "--checks", d / "metrics/digits/metric_checks.json") == 0
    return d


def _csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_help_lists_every_stage():
    out = subprocess.run([sys.executable, "-m", "scoresde", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for stage in ("prepare-data", "train-features", "train", "select-checkpoint", "sample",
                  "fid", "likelihood", "report", "validate-config"):
        assert stage in out


def test_prepare_data_outputs(work):
    train = torch.load(work / "data/train.pt", weights_only=True)
    assert train["x"].dtype == torch.uint8 and train["x"].shape[1:] == (1, 8, 8)
    assert train["levels"] == 17 and int(train["x"].max()) <= 16 and train["name"] == "digits"
    ref = torch.load(work / "data/reference.pt", weights_only=True)["images"]
    assert ref.dtype == torch.uint8 and len(ref) == 64 and int(ref.max()) == 255
    assert len(torch.load(work / "data/test.pt", weights_only=True)["x"]) == 6
    assert json.loads((work / "data/config.json").read_text())["params"]["data"]["n_test"] == 6


def test_train_outputs(work):
    from scoresde.checkpoint import load_checkpoint

    state, config = load_checkpoint(work / "checkpoints/ve/step_6.pt")
    assert {"model", "ema", "optimizer", "rng"} <= set(state)
    assert config["step"] == 6 and config["sde"]["name"] == "ve" and config["centered"] is False
    assert config["model"]["embedding"] == "fourier" and config["model"]["image_size"] == 8
    rows = _csv(work / "checkpoints/ve/train_log.csv")
    assert list(rows[0]) == ["step", "loss", "lr", "seconds"]
    assert [int(r["step"]) for r in rows] == [2, 3, 4, 6]
    resolved = json.loads((work / "checkpoints/ve/config.json").read_text())
    assert resolved["params"]["train"]["n_iters"] == 6


def test_select_outputs(work):
    rows = _csv(work / "checkpoints/ve/selection.csv")
    assert [int(r["step"]) for r in rows] == [3, 6]
    best = [r for r in rows if r["best"] == "True"]
    assert len(best) == 1 and min(float(r["fid"]) for r in rows) == float(best[0]["fid"])
    chosen = Path(best[0]["checkpoint"]).read_bytes()
    assert (work / "checkpoints/ve/best.pt").read_bytes() == chosen


def test_sample_and_fid_outputs(work):
    images = torch.load(work / "samples/digits/ve/pc_3_tweedie.pt", weights_only=True)["images"]
    assert images.dtype == torch.uint8 and images.shape == (12, 1, 8, 8)
    levels = {round(k * 255 / 16) for k in range(17)}
    assert set(images.unique().tolist()) <= levels  # mapped back onto the 17-level grid
    meta = json.loads((work / "samples/digits/ve/pc_3_tweedie.json").read_text())
    assert (meta["nfe"], meta["steps"], meta["denoise"]) == (7, 3, True)  # 3 x (P + C) + Tweedie
    rk45 = json.loads((work / "samples/digits/ve/ode-rk45_adaptive_tweedie.json").read_text())
    assert rk45["steps"] is None and rk45["predictor"] == "rk45" and rk45["nfe"] > 1
    fid = json.loads((work / "metrics/digits/ve/fid/pc_3_tweedie.json").read_text())
    assert set(fid) >= FID_FIELDS and fid["fid"] > 0
    assert "classifier" in fid["feature_extractor"]


def test_likelihood_and_report_outputs(work):
    nll = json.loads((work / "metrics/digits/ve/nll.json").read_text())
    assert set(nll) >= NLL_FIELDS and nll["n_images"] == 4 and 0 < nll["bpd"] < 20
    rows = _csv(work / "reports/metrics.csv")
    assert len(rows) == 2 and {"dataset", "sde", "sampler", "fid", "nfe"} <= set(rows[0])
    figures = ("kid", "precision", "recall", "density", "coverage", "memorised")
    assert {f"{k}{end}" for k in figures for end in ("", "_ci_low", "_ci_high")} <= set(rows[0])
    md = (work / "reports/report.md").read_text()
    assert "## What the metrics see" in md and "training copies" in md and "| recall |" in md
    assert [r["method"] for r in _csv(work / "reports/likelihood.csv")] == [
        "uniform", "importance", "truncated-normal"]
    assert "tiny" in (work / "reports/report.html").read_text()


def test_samples_are_deterministic_and_batch_independent(work, tmp_path):
    args = ["--params", work / "params.yaml", "--checkpoint", work / "checkpoints/ve/best.pt",
            "--sampler", "p", "--steps", "3", "--denoise", "none"]
    outs = []
    for i, batch in enumerate((12, 12, 5)):
        out = tmp_path / f"s{i}.pt"
        assert run("sample", *args, "--out", out, "--meta", tmp_path / f"s{i}.json",
                   "--set", f"sample.batch_size={batch}") == 0
        outs.append(torch.load(out, weights_only=True)["images"])
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


def test_seed_k_draws_the_next_block_of_per_sample_streams(work, tmp_path):
    """report.seeds: seed 1 of n samples is samples n .. 2n-1 of the seed-0 streams."""
    args = ["--params", work / "params.yaml", "--checkpoint", work / "checkpoints/ve/best.pt",
            "--sampler", "p", "--steps", "3", "--denoise", "none"]
    n = 12
    drawn = {}
    for name, extra in (("double", ["--set", f"sample.n_samples={2 * n}"]),
                        ("seed0", ["--seed-index", "0"]), ("seed1", ["--seed-index", "1"])):
        out = tmp_path / f"{name}.pt"
        assert run("sample", *args, "--set", "sample.batch_size=5", *extra, "--out", out,
                   "--meta", tmp_path / f"{name}.json") == 0
        drawn[name] = torch.load(out, weights_only=True)["images"]
    assert drawn["seed0"].shape[0] == drawn["seed1"].shape[0] == n
    assert torch.equal(drawn["seed0"], drawn["double"][:n])
    assert torch.equal(drawn["seed1"], drawn["double"][n:])
    assert not torch.equal(drawn["seed0"], drawn["seed1"])
    assert json.loads((tmp_path / "seed1.json").read_text())["seed_index"] == 1
    assert run("sample", *args, "--seed-index", "-1", "--out", tmp_path / "x.pt", "--meta",
               tmp_path / "x.json") == 2
    assert not (tmp_path / "x.pt").exists()


@pytest.mark.parametrize("sampler, steps", [("pc", "3"), ("ode-heun", "2")])
def test_one_job_draws_the_tweedie_pair_as_two_separate_jobs_would(work, tmp_path, sampler,
                                                                    steps):
    args = ["sample", "--params", work / "params.yaml", "--checkpoint",
            work / "checkpoints/ve/best.pt", "--sampler", sampler, "--steps", steps]
    assert run(*args, "--denoise", "tweedie", "none", "--out", tmp_path / "t.pt",
               tmp_path / "n.pt", "--meta", tmp_path / "t.json", tmp_path / "n.json") == 0
    for d in ("tweedie", "none"):
        alone = tmp_path / f"alone_{d}.pt"
        assert run(*args, "--denoise", d, "--out", alone, "--meta", tmp_path / "a.json") == 0
        both = torch.load(tmp_path / f"{d[0]}.pt", weights_only=True)["images"]
        assert torch.equal(both, torch.load(alone, weights_only=True)["images"])
        meta = json.loads((tmp_path / f"{d[0]}.json").read_text())
        assert meta["nfe"] == json.loads((tmp_path / "a.json").read_text())["nfe"]
        assert meta["trajectory_shared_by"] == ["tweedie", "none"]
    # Both end at x(eps); the Tweedie case adds one score evaluation there. (At eps = 1e-5 the
    # Tweedie step moves a VE sample by far less than one of the 256 levels, so the images may
    # or may not differ: their difference is no test.)
    nfe = {d: json.loads((tmp_path / f"{d}.json").read_text())["nfe"] for d in "tn"}
    assert nfe["t"] == nfe["n"] + 1


def test_denoise_and_outputs_must_pair_up(work, tmp_path, capsys):
    code = run("sample", "--params", work / "params.yaml", "--checkpoint",
               work / "checkpoints/ve/best.pt", "--sampler", "pc", "--steps", "3",
               "--denoise", "tweedie", "none", "--out", tmp_path / "t.pt", "--meta",
               tmp_path / "t.json")
    assert code == 2 and "one --out and one --meta per --denoise" in _error(capsys)
    assert not list(tmp_path.iterdir())


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and err[-1].startswith("error: ")
    return err[-1]


def test_missing_dataset_root_is_one_clear_error(tmp_path, capsys):
    code = run("prepare-data", "--dataset", "cifar10", "--root", tmp_path / "nowhere",
               "--train-out", tmp_path / "train.pt", "--test-out", tmp_path / "test.pt",
               "--reference-out", tmp_path / "ref.pt")
    assert code == 2
    message = _error(capsys)
    assert "cifar-10-batches-py" in message and "nowhere" in message
    assert not list(tmp_path.iterdir())  # nothing half-written


def _pngs(folder: Path, n: int, size: int, mode: str = "RGB") -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new(mode, (size, size), 40 * i if mode == "L" else (40 * i,) * len(mode)).save(
            folder / f"{i}.png")


def _prepare(root: Path, out: Path) -> int:
    return run("prepare-data", "--set", "data.dataset=image_folder", "--set", f"data.root={root}",
               "--dataset", "image_folder", "--train-out", out / "train.pt", "--test-out",
               out / "test.pt", "--reference-out", out / "ref.pt", "--config-out", out / "c.json")


def test_train_and_test_images_of_other_sizes_are_refused_by_prepare_data(tmp_path, capsys):
    for cls in ("a", "b"):
        _pngs(tmp_path / "raw/train" / cls, 3, 8)
        _pngs(tmp_path / "raw/test" / cls, 2, 6)
    assert _prepare(tmp_path / "raw", tmp_path / "out") == 2
    message = _error(capsys)
    assert "test images have shape (C, H, W) (3, 6, 6) but the training images (3, 8, 8)" in message
    assert "one size" in message and not (tmp_path / "out").exists()


def test_prepare_data_logs_one_warning_for_converted_images(tmp_path, capsys):
    for split, n in (("train", 3), ("test", 2)):
        _pngs(tmp_path / "raw" / split / "a", n, 4)
        _pngs(tmp_path / "raw" / split / "b", n, 4, mode="L")
    assert _prepare(tmp_path / "raw", tmp_path / "out") == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "warning:" in line]
    assert len(warnings) == 2, err  # one per split
    assert "converted 3 of 6 images to RGB (3 L" in warnings[0]
    saved = torch.load(tmp_path / "out/train.pt", weights_only=True)
    assert saved["classes"] == ["a", "b"] and saved["x"].shape == (6, 3, 4, 4)
    record = json.loads((tmp_path / "out/c.json").read_text())
    assert len(record["raw_fingerprint"]) == 64 and record["classes"]["test"] == [0, 1]


@pytest.mark.parametrize("damage", ["truncate", "missing", "flip"])
def test_bad_checkpoint_is_one_clear_error(work, tmp_path, capsys, damage):
    bad = tmp_path / "best.pt"
    blob = (work / "checkpoints/ve/best.pt").read_bytes()
    if damage == "truncate":
        bad.write_bytes(blob[: len(blob) // 2])
    elif damage == "flip":
        mid = len(blob) // 2  # inside the tensor data
        bad.write_bytes(blob[:mid] + bytes([blob[mid] ^ 0xFF]) + blob[mid + 1 :])
    out = tmp_path / "out.pt"
    code = run("sample", "--params", work / "params.yaml", "--checkpoint", bad, "--sampler", "p",
               "--steps", "3", "--denoise", "none", "--out", out, "--meta", tmp_path / "o.json")
    assert code == 2
    message = _error(capsys)
    assert str(bad) in message and any(w in message for w in ("rerun", "retrain", "run the"))
    assert not out.exists()


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--sampler", "dpm", "--steps", "3"], "unknown sampler 'dpm'"),
        (["--sampler", "ode-rk45", "--steps", "10"], "adaptive"),
        (["--sampler", "pc", "--steps", "0"], "positive integer"),
        (["--sampler", "pc", "--steps", "3", "--sde", "vp"], "trained for SDE 've', not 'vp'"),
        (["--sampler", "pc", "--steps", "3", "--sde", "xx"], "unknown SDE 'xx'"),
        (["--sampler", "pc", "--steps", "3", "--set", "sample.snr.ve=-1"], "sample.snr.ve"),
        (["--sampler", "pc", "--steps", "3", "--set", "sample.n_sample=3"], "sample.n_sample"),
    ],
)
def test_bad_sampler_arguments(work, tmp_path, capsys, extra, words):
    code = run("sample", "--params", work / "params.yaml", "--checkpoint",
               work / "checkpoints/ve/best.pt", "--denoise", "tweedie", "--out",
               tmp_path / "o.pt", "--meta", tmp_path / "o.json", *extra)
    assert code == 2
    assert words in _error(capsys)
    assert not list(tmp_path.iterdir())


def test_unknown_sde_for_train(work, tmp_path, capsys):
    code = run("train", "--params", work / "params.yaml", "--data", work / "data/train.pt",
               "--sde", "vesde", "--out-dir", tmp_path, "--log-csv", tmp_path / "l.csv",
               "--config-out", tmp_path / "c.json")
    assert code == 2 and "unknown SDE 'vesde'; choose one of ve, vp, subvp" in _error(capsys)


def test_error_has_no_traceback_in_a_real_process(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "scoresde", "train", "--set", "train.n_iters=-3", "--data", "x",
         "--sde", "ve", "--out-dir", str(tmp_path), "--log-csv", "l", "--config-out", "c"],
        capture_output=True, text=True, env={**os.environ, "SCORESDE_TRACEBACK": ""})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: params: train.n_iters: -3 is less than the minimum of 1"]


def test_validate_config(capsys, tmp_path):
    assert run("validate-config", ROOT / "params.yaml", ROOT / ".test/params.yaml") == 0
    assert capsys.readouterr().out.startswith("ok:")
    bad = tmp_path / "bad.yaml"
    bad.write_text("sample:\n  stepz: [1]\n")
    assert run("validate-config", bad) == 2
    assert "sample.stepz: unknown key" in _error(capsys)
