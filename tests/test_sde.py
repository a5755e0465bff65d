"""The forward SDEs against exact answers: simulation, discretisation, priors, shapes."""

import math

import pytest
import torch
from conftest import PAPER_SDES

from scoresde import VESDE, VPSDE, SubVPSDE, make_sde


def simulate_forward(sde, x0, t_end, n_steps, gen):
    """Fine Euler-Maruyama simulation of dx = f dt + g dw from 0 to t_end."""
    x, dt = x0.clone(), t_end / n_steps
    for i in range(n_steps):
        t = torch.full((x.shape[0],), i * dt, dtype=x.dtype)
        f, g = sde.sde(x, t)
        x = x + f * dt + g[:, None] * math.sqrt(dt) * torch.randn(x.shape, generator=gen, dtype=x.dtype)
    return x


@pytest.mark.parametrize("t_end", [0.1, 0.5, 1.0])
def test_marginal_prob_matches_euler_maruyama(sde, t_end):
    gen = torch.Generator().manual_seed(0)
    n = 20000
    x0 = torch.full((n, 2), 1.5, dtype=torch.float64)
    x0[:, 1] = -0.5
    start = x0.clone()
    if isinstance(sde, VESDE):  # the paper's s(t) = sigma(t) counts the sigma_min noise at t = 0
        start = start + sde.sigma_min * torch.randn(start.shape, generator=gen, dtype=torch.float64)
    xt = simulate_forward(sde, start, t_end, 2000, gen)
    t = torch.full((n,), t_end, dtype=torch.float64)
    mean, std = sde.marginal_prob(x0, t)
    emp_std = xt.std(0)
    se_mean = std[0] / math.sqrt(n)
    assert torch.allclose(xt.mean(0), mean[0], atol=5 * se_mean.item() + 1e-3 * std[0].item())
    # standard error of a standard deviation is about std / sqrt(2n); allow for EM bias too
    assert torch.allclose(emp_std, std[0].expand(2), rtol=5 / math.sqrt(2 * n) + 2e-3)


def test_kernels_closed_form():
    t = torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64)
    ve, vp, svp = VESDE(), VPSDE(), SubVPSDE()
    assert torch.allclose(ve.std(t), 0.01 * (5000.0**t))
    int_beta = 0.1 * t + 0.5 * t**2 * 19.9
    assert torch.allclose(vp.mean_coeff(t), torch.exp(-0.5 * int_beta))
    assert torch.allclose(vp.std(t), torch.sqrt(1 - torch.exp(-int_beta)))
    assert torch.allclose(svp.std(t), 1 - torch.exp(-int_beta))
    assert torch.all(svp.std(t) <= vp.std(t))


def test_discretize_composes_to_the_marginal(sde):
    """Chaining the discrete transitions from 0 reproduces the kernel's variance at every grid time."""
    N = sde.N
    var, a = torch.zeros(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)
    x = torch.ones(1, 1, dtype=torch.float64)
    for i in range(1, N + 1):
        t = torch.tensor([i / N], dtype=torch.float64)
        f, G = sde.discretize(x, t)
        m = 1 + f[0, 0] / x[0, 0]
        var, a = m**2 * var + G**2, a * m
    t1 = torch.ones(1, dtype=torch.float64)
    # the first step lands on clean data (SMLD: G_1^2 = sigma_1^2), so the chain ends at s(1)^2
    assert torch.allclose(var, sde.std(t1) ** 2, rtol=1e-9, atol=1e-12)
    assert torch.allclose(a, sde.mean_coeff(t1), rtol=1e-9)


def test_discretize_matches_smld_and_ddpm():
    """At dt = 1/N: VE gives G^2 = sigma_i^2 - sigma_{i-1}^2; VP gives DDPM's beta_i = beta(t_i)/N."""
    N = 1000
    t = torch.tensor([0.25, 0.5, 1.0], dtype=torch.float64)
    x = torch.ones(3, 1, dtype=torch.float64)
    ve = VESDE(N=N)
    f, G = ve.discretize(x, t)
    assert torch.all(f == 0)
    assert torch.allclose(G**2, ve.sigma(t) ** 2 - ve.sigma(t - 1 / N) ** 2)
    vp = VPSDE(N=N)
    f, G = vp.discretize(x, t)
    beta_ddpm = vp.beta(t) / N
    assert torch.allclose(G**2, beta_ddpm, rtol=2e-2)
    assert torch.allclose(f[:, 0], torch.sqrt(1 - G**2) - 1, rtol=1e-9)
    assert torch.allclose(vp.langevin_alpha(t), 1 - G**2)


def test_reverse_drift_and_probability_flow(sde):
    x = torch.randn(5, 3, dtype=torch.float64)
    t = torch.rand(5, dtype=torch.float64)

    def score(x, t):
        return -x * 0.7

    f, g = sde.sde(x, t)
    drift, diff = sde.reverse(score).sde(x, t)
    assert torch.allclose(drift, f - g[:, None] ** 2 * score(x, t))
    assert torch.allclose(diff, g)
    drift, diff = sde.reverse(score, probability_flow=True).sde(x, t)
    assert torch.allclose(drift, f - 0.5 * g[:, None] ** 2 * score(x, t))
    assert torch.all(diff == 0)


@pytest.mark.parametrize("shape", [(4, 2), (4, 3, 8, 8)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rank_and_dtype_agnostic(sde, shape, dtype):
    gen = torch.Generator().manual_seed(1)
    z = sde.prior_sampling(shape, gen, dtype=dtype)
    assert z.shape == shape and z.dtype == dtype
    t = torch.full((shape[0],), 0.5, dtype=dtype)
    mean, std = sde.marginal_prob(z, t)
    f, g = sde.sde(z, t)
    fd, G = sde.discretize(z, t)
    assert mean.shape == f.shape == fd.shape == shape
    assert std.shape == g.shape == G.shape == (shape[0],)
    assert mean.dtype == f.dtype == std.dtype == dtype
    ref = torch.distributions.Normal(0.0, sde.prior_std()).log_prob(z.double()).flatten(1).sum(1)
    assert torch.allclose(sde.prior_logp(z).double(), ref, rtol=1e-5)


def test_prior_sampling_uses_the_generator(sde):
    a = sde.prior_sampling((3, 2), torch.Generator().manual_seed(7))
    b = sde.prior_sampling((3, 2), torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    gens = [torch.Generator().manual_seed(i) for i in range(3)]
    per_sample = sde.prior_sampling((3, 2), gens)
    single = sde.prior_sampling((1, 2), [torch.Generator().manual_seed(1)])
    assert torch.equal(per_sample[1:2], single)


def test_noise_condition():
    t = torch.tensor([0.0, 1.0])
    assert torch.allclose(VESDE().noise_condition(t), torch.log(torch.tensor([0.01, 50.0])))
    assert torch.allclose(VPSDE().noise_condition(t), torch.tensor([0.0, 999.0]))


def test_make_sde_and_bad_parameters():
    assert isinstance(make_sde("subvp", beta_min=0.1, beta_max=20.0), SubVPSDE)
    with pytest.raises(ValueError, match="unknown SDE 'vx'.*ve, vp, subvp"):
        make_sde("vx")
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        VESDE(sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError, match="N"):
        VPSDE(N=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda(sde):
    gen = torch.Generator(device="cuda").manual_seed(0)
    z = sde.prior_sampling((4, 3, 8, 8), gen, device="cuda")
    t = torch.full((4,), 0.3, device="cuda")
    assert sde.marginal_prob(z, t)[0].is_cuda and sde.discretize(z, t)[1].is_cuda


def test_paper_sdes_cover_all_names():
    assert set(PAPER_SDES) == {"ve", "vp", "subvp"}
