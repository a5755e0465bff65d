"""The reference loops of benchmarks/bench_stochastic_samplers.py give our samples from the same
network, grid and noise (skipped when k-diffusion / diffusers, from benchmarks/requirements*.txt,
are not installed)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import benchlib  # noqa: E402

from scoresde import VESDE, VPSDE, get_score_fn  # noqa: E402


def _setup(sde):
    net = benchlib.default_unet(sde.name, channels=8).double()
    x_T = sde.prior_sampling((3, 1, 8, 8), torch.Generator().manual_seed(0), dtype=torch.float64)
    return get_score_fn(sde, net), x_T


@pytest.mark.parametrize("solver", ["sample_dpmpp_2m_sde", "sample_heun"])
@pytest.mark.parametrize("make_sde", [lambda: VESDE(sigma_max=8.0), VPSDE])
def test_k_diffusion_gives_our_samples(make_sde, solver):
    if benchlib.k_diffusion_sampling() is None:
        pytest.skip("k-diffusion not installed (benchmarks/requirements-nodeps.txt)")
    from bench_stochastic_samplers import k_diffusion_pair

    from scoresde.sampling import karras, logsnr_uniform

    sde = make_sde()
    score, x_T = _setup(sde)
    grid = (logsnr_uniform if solver == "sample_dpmpp_2m_sde" else karras)(sde, 4, sde.sampling_eps,
                                                                          dtype=torch.float64)
    ours, theirs, _ = k_diffusion_pair(sde, score, x_T, grid, solver)
    with torch.no_grad():
        assert torch.allclose(ours(), theirs(), rtol=1e-9, atol=1e-9)


def test_diffusers_gives_our_samples():
    pytest.importorskip("diffusers")
    from bench_stochastic_samplers import diffusers_pair

    sde = VPSDE()
    score, x_T = _setup(sde)
    ours, theirs, _ = diffusers_pair(sde, score, x_T, 4)
    with torch.no_grad():
        assert (ours() - theirs()).abs().max().item() < 1e-3
