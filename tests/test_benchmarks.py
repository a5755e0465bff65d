"""Smoke tests of benchmarks/: every script runs with tiny settings, and the reference loops the speed
comparisons rest on produce the same samples as ours from the same noise (skipped when the optional
reference package is not installed: it comes from benchmarks/requirements.txt, not requirements.txt).

Speed itself is never asserted here; it lives in benchmarks/results.md.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import benchlib  # noqa: E402

from scoresde import VESDE, VPSDE, get_score_fn, pc_sample  # noqa: E402


def test_run_all_quick_writes_results(tmp_path):
    out = tmp_path / "results.md"
    proc = subprocess.run([sys.executable, str(BENCH / "run_all.py"), "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    for heading in ("Summary: measured ratios", "## sampler_overhead", "## overhead", "## sde_samplers",
                    "## ode", "## likelihood", "## training", "torch threads"):
        assert heading in text


def test_race_alternates_and_keeps_answers():
    calls = []
    keep = {}
    best = benchlib.race({"a": lambda: calls.append("a") or 1, "b": lambda: calls.append("b") or 2},
                         repeats=2, warmup=1, keep=keep)
    assert calls == ["a", "b", "a", "b", "b", "a"]  # warm-up, then the order rotates each round
    assert set(best) == {"a", "b"} and all(t >= 0 for t in best.values())
    assert keep == {"a": 1, "b": 2}
    rounds = {"a": [2.0, 9.0, 4.0], "b": [1.0, 3.0, 4.0]}  # a load spike in round 2 hits both
    assert benchlib.paired_ratio(rounds, "a", "b") == 2.0
    assert benchlib.paired_ratio(rounds, "a", "b", scale=0.5) == 1.0


def test_check_needs_speed_and_agreement():
    assert benchlib.Check("x", 0.9, 1.0).ok
    assert not benchlib.Check("x", 1.1, 1.0).ok
    assert not benchlib.Check("x", 0.5, 1.0, agree=False).ok
    table = benchlib.checks_table([benchlib.Check("x", 1.1, 1.0)]).markdown()
    assert "MISSED" in table and "| x |" in table


def _tiny_score(sde):
    return get_score_fn(sde, benchlib.default_unet(sde.name, channels=8))


@torch.inference_mode()
def test_pc_matches_diffusers_score_sde_ve_loop():
    pytest.importorskip("diffusers")
    from bench_sde_samplers import diffusers_pc, pc_official_grid

    sde = VESDE()
    score_fn, shape = _tiny_score(sde), (3, 1, 8, 8)
    ours = pc_official_grid(score_fn, sde, shape, 6, 0.16, torch.Generator().manual_seed(0))
    theirs = diffusers_pc(score_fn, sde, shape, 6, 0.16, torch.Generator().manual_seed(0))
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-4 * ours.std().item())


@pytest.mark.parametrize("sde", [VESDE(), VPSDE()], ids=["ve", "vp"])
@torch.inference_mode()
def test_euler_maruyama_matches_torchsde(sde):
    pytest.importorskip("torchsde")
    from bench_sde_samplers import torchsde_em

    score_fn, shape = _tiny_score(sde), (3, 1, 8, 8)
    ours, _ = pc_sample(score_fn, sde, shape, steps=6, predictor="euler_maruyama", corrector="none",
                        denoise=False, generator=torch.Generator().manual_seed(0))
    theirs = torchsde_em(score_fn, sde, shape, 6, torch.Generator().manual_seed(0))
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-4 * ours.std().item())


@torch.inference_mode()
def test_ode_references_start_from_our_prior_draw():
    from bench_ode import kd, ours, start, tde

    sde = VESDE()
    score_fn = _tiny_score(sde)
    x0 = start(sde, (2, 1, 8, 8))
    x_ours, nfe = ours("rk45", score_fn, sde, x0, 1e-3)
    x_tde, nfe_tde = tde(score_fn, sde, x0, 1e-3)
    assert nfe == nfe_tde
    assert torch.allclose(x_ours, x_tde, atol=1e-3 * x_ours.abs().max().item())
    if benchlib.k_diffusion_sampling() is None:
        pytest.skip("k-diffusion not installed")
    x_kd, nfe_kd = kd("euler", score_fn, sde, x0, 4, "t")
    assert nfe_kd == 4 and x_kd.shape == x0.shape and torch.isfinite(x_kd).all()


@pytest.mark.parametrize("embedding", ["fourier", "positional"])
@pytest.mark.parametrize("attn", [(), (4,)], ids=["mid-attn", "attn4"])
def test_plain_unet_from_ours_is_the_same_function(embedding, attn):
    import plain_unet

    from scoresde.models import UNet

    torch.manual_seed(0)
    net = UNet(8, 1, channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=attn,
               embedding=embedding)
    with torch.no_grad():  # zero-initialised layers (output, residual ends) would hide a wrong mapping
        for p in net.parameters():
            if not p.any():
                p.normal_(0.0, 0.05)
    assert plain_unet.config_of(net)["attn_resolutions"] == attn
    assert plain_unet.output_error(net) < 1e-5


def test_profile_pipeline_tables_a_run_stage_by_stage(tmp_path, capsys):
    import json

    import profile_pipeline

    head = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    for run, sample_jobs in (("old", 4), ("new", 2)):
        for rule, jobs, wall in (("train", 1, 30.0), ("sample", sample_jobs, 5.0)):
            for j in range(jobs):
                tsv = tmp_path / run / "logs/benchmarks" / rule / f"job{j}.tsv"
                tsv.parent.mkdir(parents=True, exist_ok=True)
                tsv.write_text(head + f"{wall}\t0:00:05\t1\t1\t1\t1\t0\t0\t90\t{wall - 1}\n")
        meta = tmp_path / run / "samples/digits/ve/pc_10_none.json"
        meta.parent.mkdir(parents=True, exist_ok=True)
        meta.write_text(json.dumps({"sde": "ve", "sampler": "pc", "steps": 10, "seconds": 3.0}))
    assert profile_pipeline.main([str(tmp_path / "new"), "--before", str(tmp_path / "old")]) == 0
    out = capsys.readouterr().out
    assert "| train | 1 | 30 | 29 | 75% | 1 | 30 | 29 | 1.00 |" in out
    assert "| sample | 2 | 10 | 8 | 25% | 4 | 20 | 16 | 0.50 |" in out
    assert "| total | 3 | 40 | 37 | 100% | 5 | 50 | 45 | 0.82 |" in out
    assert "10 s of job time, 3 s drawing samples, 7 s (3.5 s per job)" in out
    assert profile_pipeline.main([str(tmp_path / "nowhere")]) == 2


def test_profile_pipeline_splits_timed_work_from_the_rest(tmp_path, capsys):
    import json

    import profile_pipeline

    head = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    for rule, wall in (("train", 30.0), ("likelihood", 20.0), ("select_checkpoint", 6.0), ("fid", 4.0)):
        tsv = tmp_path / "logs/benchmarks" / rule / "digits/ve.tsv"
        tsv.parent.mkdir(parents=True, exist_ok=True)
        tsv.write_text(head + f"{wall}\t0:00:05\t1\t1\t1\t1\t0\t0\t90\t{wall}\n")
    run = tmp_path / "checkpoints/digits/ve"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"stage": "train", "seconds": 27.5}))
    (run / "selection.csv").write_text("step,fid,seconds\n400,3.0,1.0\n800,2.0,1.5\n")
    nll = tmp_path / "metrics/digits/ve/nll.json"
    nll.parent.mkdir(parents=True)
    nll.write_text(json.dumps({"bpd": 2.0, "seconds": 18.0}))
    log = tmp_path / ".snakemake/log/2026-12-06T040102.snakemake.log"
    log.parent.mkdir(parents=True)
    log.write_text("22 of 22 steps (100%) done\nElapsed time: 0:01:02.500000\n")
    assert profile_pipeline.main([str(tmp_path), "--cores", "2"]) == 0
    out = capsys.readouterr().out
    assert "| train | 30 | 28 | 2 |" in out
    assert "| likelihood | 20 | 18 | 2 |" in out
    assert "| select_checkpoint | 6 | 2 | 4 |" in out
    assert "| fid | 4 | 0 | 4 |" in out
    assert "| total | 60 | 48 | 12 |" in out
    assert "floor on 2 cores (the timed work alone, perfectly packed): 24 s; all jobs packed with " \
           "no idle core: 30 s; this run's wall time: 62 s" in out


def test_training_recipe_ablation_tables_every_recipe(tmp_path, capsys):
    """bench_training_recipe at a tiny budget: every recipe trains for the budget and is scored."""
    import bench_training_recipe

    assert bench_training_recipe.main([
        "--budget", "0.5", "--samples", "8", "--steps", "2", "--work", str(tmp_path),
        "--set", "eval.features.epochs=1", "--set", "data.n_reference=32", "--set", "eval.fid.bootstrap.n=5",
        "--set", "model.channels=8"]) == 0
    out = capsys.readouterr().out
    assert "| recipe | steps | loss (last 50) | FID [interval] | precision | recall | speckled |" in out
    for name in bench_training_recipe.RECIPES:
        assert f"| {name} | " in out
    assert "real test images:" in out
