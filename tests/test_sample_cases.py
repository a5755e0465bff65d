"""sample-cases: every case of a sweep drawn in one process gives the files a separate `sample`
job per (sampler, steps) gives, byte for byte but the wall time; bad case lists fail before
anything is drawn or written."""

from __future__ import annotations

import json

import pytest
import torch
from stage_runs import prepare_and_train, run

from scoresde.stages.sample import parse_case, trajectories

TINY = """
data: {n_test: 6, n_reference: 64}
model: {channels: 8, channel_mult: [1, 2]}
train: {n_iters: 4, snapshot_every: 4, batch_size: 16, log_every: 2, warmup: 2}
sample: {n_samples: 10, batch_size: 4, steps: [3]}
eval:
  features: {epochs: 1}
"""
# Interleaved on purpose: the order of the cases must not change any of them.
CASES = ["pc_3_tweedie", "ode-heun_2_none", "c_2_none", "pc_3_none", "ode-rk45_adaptive_tweedie",
         "ode-heun_2_tweedie"]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("sample_cases")
    (d / "params.yaml").write_text(TINY)
    prepare_and_train(d / "params.yaml", d / "data", d / "checkpoints", "vp")
    return d


def _args(work, *extra):
    return ["--params", work / "params.yaml", "--checkpoint", work / "checkpoints/vp/step_4.pt",
            "--sde", "vp", *extra]


def test_parse_case_and_trajectories():
    assert parse_case("ode-rk45_adaptive_none") == ("ode-rk45", None, "none")
    assert parse_case("ode-dpm-solver-3_6_tweedie") == ("ode-dpm-solver-3", 6, "tweedie")
    assert trajectories(CASES) == [("pc", 3, [0, 3]), ("ode-heun", 2, [1, 5]), ("c", 2, [2]),
                                   ("ode-rk45", None, [4])]


def test_one_process_writes_what_one_job_per_trajectory_writes(work, tmp_path):
    together = tmp_path / "together"
    assert run("sample-cases", *_args(work), "--cases", *CASES,
               "--out", *[together / f"{c}.pt" for c in CASES],
               "--meta", *[together / f"{c}.json" for c in CASES]) == 0
    alone = tmp_path / "alone"
    for sampler, steps, idx in trajectories(CASES):
        names = [CASES[i] for i in idx]
        denoise = [parse_case(c)[2] for c in names]
        assert run("sample", *_args(work), "--sampler", sampler, "--steps", steps or "adaptive",
                   "--denoise", *denoise, "--out", *[alone / f"{c}.pt" for c in names],
                   "--meta", *[alone / f"{c}.json" for c in names]) == 0
    for case in CASES:
        a = torch.load(together / f"{case}.pt", weights_only=True)["images"]
        b = torch.load(alone / f"{case}.pt", weights_only=True)["images"]
        assert a.shape == (10, 1, 8, 8) and torch.equal(a, b), case
        meta = [json.loads((d / f"{case}.json").read_text()) for d in (together, alone)]
        for m in meta:
            m.pop("seconds")
            m["config"].pop("output")
        assert meta[0] == meta[1], case
    shared = json.loads((together / "pc_3_none.json").read_text())["trajectory_shared_by"]
    assert shared == ["tweedie", "none"]  # the order the cases were given in


@pytest.mark.parametrize(
    "cases, outs, words",
    [
        (["pc_3_tweedie", "pc3_none"], 2, "case 'pc3_none' is not"),
        (["pc_3_tweedie", "pc_3_denoised"], 2, "unknown denoise 'denoised'"),
        (["pc_3_tweedie", "dpm_3_none"], 2, "unknown sampler 'dpm'"),
        (["ode-rk45_10_none"], 1, "adaptive"),
        (["pc_3_none", "pc_3_none"], 2, "case pc_3_none is given twice"),
        (["pc_3_none", "p_3_none"], 1, "one --out and one --meta per case"),
    ],
)
def test_bad_case_lists_fail_before_any_file(work, tmp_path, capsys, cases, outs, words):
    code = run("sample-cases", *_args(work), "--cases", *cases,
               "--out", *[tmp_path / f"{i}.pt" for i in range(outs)],
               "--meta", *[tmp_path / f"{i}.json" for i in range(outs)])
    assert code == 2
    assert words in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
