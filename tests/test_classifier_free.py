"""Classifier-free guidance against exact answers (float64 Gaussian mixtures, exact class scores).

Each mixture component is a class: p_t(x | y = k) is component k perturbed by the SDE's kernel and
p_t(x) the whole mixture, so the class-conditional score (label K = no label) is exact.
"""

from __future__ import annotations

import math

import pytest
import torch
from exact import GaussianMixture, two_mode_mixture
from exact_conditional import class_log_prob, component

from scoresde.controllable import classifier_free_score
from scoresde.sampling import ODE_METHODS, SDE_METHODS, ode_sample, pc_sample, sde_sample
from scoresde.sde import make_sde

SDES = {"ve": {"sigma_min": 0.01, "sigma_max": 10.0}, "vp": {}, "subvp": {}}


def _sde(name):
    return make_sde(name, **SDES[name])


def exact_class_score(mix: GaussianMixture, sde):
    """score(x, t, labels): component y's perturbed score, the mixture's for y = K (no label)."""
    K = len(mix.w)

    def score(x, t, labels):
        xf = x.reshape(x.shape[0], -1).to(torch.float64)
        mu, cov = mix._comps(sde, t)
        mu, cov = mu.expand(len(xf), -1, -1), cov.expand(len(xf), -1, -1, -1)
        diff = (xf[:, None] - mu).unsqueeze(-1)
        comp_scores = -torch.linalg.solve(cov, diff).squeeze(-1)  # (B, K, D)
        comp = torch.distributions.MultivariateNormal(mu, covariance_matrix=cov)
        resp = torch.softmax(comp.log_prob(xf[:, None]) + mix.w.log(), dim=1)
        uncond = (resp[..., None] * comp_scores).sum(1)
        y = labels.clamp(max=K - 1)
        cond = comp_scores[torch.arange(len(xf)), y]
        out = torch.where((labels == K)[:, None], uncond, cond)
        return out.reshape(x.shape).to(x.dtype)

    return score


def line_class_score(mix: GaussianMixture, sde, t: float):
    """``exact_class_score`` of a 1-D mixture at one fixed time, in closed form (fast)."""
    tt = torch.tensor([t], dtype=torch.float64)
    a, s = float(sde.mean_coeff(tt)), float(sde.std(tt))
    m, v = a * mix.mu[:, 0], a**2 * mix.S[:, 0, 0] + s**2  # (K,)
    K = len(mix.w)

    def score(x, _t, labels):
        comp = -(x - m) / v  # (B, K)
        logp = -0.5 * (x - m) ** 2 / v - 0.5 * v.log() + mix.w.log()
        uncond = (torch.softmax(logp, 1) * comp).sum(1, keepdim=True)
        cond = comp.gather(1, labels.clamp(max=K - 1)[:, None])
        return torch.where((labels == K)[:, None], uncond, cond)

    return score


def tilted_log_density(mix, sde, x, t, k, w):
    """(1 + w) log p_t(x | k) - w log p_t(x), unnormalised."""
    return (1 + w) * component(mix, k).log_prob_t(sde, x, t) - w * mix.log_prob_t(sde, x, t)


@pytest.mark.parametrize("sde_name", list(SDES))
@pytest.mark.parametrize("w", [0.0, 0.5, 3.0])
def test_guided_score_is_the_score_of_the_tilted_density(sde_name, w):
    sde, mix = _sde(sde_name), two_mode_mixture()
    gen = torch.Generator().manual_seed(0)
    x = 2 * torch.randn(64, 2, dtype=torch.float64, generator=gen)
    t = 0.01 + 0.98 * torch.rand(64, dtype=torch.float64, generator=gen)
    labels = torch.randint(2, (64,), generator=gen)
    guided = classifier_free_score(exact_class_score(mix, sde), labels, w, null_label=2)(x, t)
    xg = x.clone().requires_grad_(True)
    logp = torch.stack([tilted_log_density(mix, sde, xg[i:i + 1], t[i:i + 1], int(labels[i]), w)[0]
                        for i in range(len(x))])
    (expected,) = torch.autograd.grad(logp.sum(), xg)
    torch.testing.assert_close(guided, expected, rtol=1e-9, atol=1e-9)


def _line_mixture():
    """Three overlapping 1-D classes: the tilt moves class 1 visibly away from its neighbours."""
    return GaussianMixture([0.3, 0.4, 0.3], [[-1.0], [0.0], [1.2]], [[[0.3]], [[0.3]], [[0.3]]])


def _grid_moments(logp: torch.Tensor, grid: torch.Tensor):
    p = torch.softmax(logp, 0)
    mean = float((p * grid).sum())
    return mean, float((p * (grid - mean) ** 2).sum()), p


@pytest.mark.parametrize("w", [1.0, 3.0])
def test_langevin_with_the_guided_score_samples_the_tilted_density(w):
    """At a fixed t, Langevin dynamics driven by the guided score draws
    p_t(x | y)^(1+w) p_t(x)^(-w) / Z, whose moments and quantiles come from quadrature."""
    sde, mix, k, n = _sde("vp"), _line_mixture(), 1, 4000
    t = torch.full((n,), 0.05, dtype=torch.float64)
    grid = torch.linspace(-6, 6, 24001, dtype=torch.float64)[:, None]
    tg = torch.full((len(grid),), 0.05, dtype=torch.float64)
    mean, var, p = _grid_moments(tilted_log_density(mix, sde, grid, tg, k, w), grid[:, 0])
    plain_mean, plain_var, _ = _grid_moments(component(mix, k).log_prob_t(sde, grid, tg), grid[:, 0])
    se_mean, se_var = math.sqrt(var / n), var * math.sqrt(2 / n)
    assert plain_var - var > 8 * se_var  # the tilt is visible at this sample size
    cls = line_class_score(mix, sde, 0.05)
    torch.testing.assert_close(cls(grid[::97], tg[::97], torch.tensor([k, 3]).repeat_interleave(124)),
                               exact_class_score(mix, sde)(grid[::97], tg[::97],
                                                           torch.tensor([k, 3]).repeat_interleave(124)))
    score = classifier_free_score(cls, k, w, null_label=3)
    gen = torch.Generator().manual_seed(3)
    a, s = float(sde.mean_coeff(t[:1])), float(sde.std(t[:1]))  # start at p_t(x | k)
    x = a * mix.mu[k] + math.sqrt(a**2 * float(mix.S[k, 0, 0]) + s**2) * torch.randn(
        n, 1, dtype=torch.float64, generator=gen)
    h = 1e-3
    for _ in range(2000):
        x = x + h * score(x, t) + math.sqrt(2 * h) * torch.randn(x.shape, dtype=torch.float64,
                                                                  generator=gen)
    assert abs(float(x.mean()) - mean) < 4 * se_mean + 5e-3, (float(x.mean()), mean, plain_mean)
    assert abs(float(x.var()) - var) < 4 * se_var + 5e-3, (float(x.var()), var, plain_var)
    cdf = torch.cumsum(p, 0)
    qs = torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95], dtype=torch.float64)
    exact_q = grid[torch.searchsorted(cdf, qs), 0]
    assert torch.allclose(torch.quantile(x[:, 0], qs), exact_q, atol=0.04)


def _overlapping_classes():
    """Two classes that overlap: p(k | x) is far from 0 and 1 over much of each class."""
    return GaussianMixture([0.5, 0.5], [[-0.5, 0.2], [0.5, -0.2]],
                           [[[0.4, 0.1], [0.1, 0.3]], [[0.4, -0.1], [-0.1, 0.3]]])


def _posterior(mix, sde, x, k):
    return class_log_prob(mix, sde, k)(x, torch.zeros(len(x), dtype=torch.float64)).exp()


SAMPLERS = ([("pc", None)] + [("ode", m) for m in ODE_METHODS if m != "rk45"]
            + [("sde", m) for m in SDE_METHODS])


def _draw(score, sde, kind, method, n, gen):
    shape, kw = (n, 2), {"generator": gen, "dtype": torch.float64}
    if kind == "pc":
        return pc_sample(score, sde, shape, steps=100, corrector="none", **kw)[0]
    if kind == "ode":
        return ode_sample(score, sde, shape, method=method, steps=60, denoise=True, **kw)[0]
    return sde_sample(score, sde, shape, method, steps=60, **kw)[0]


@pytest.mark.parametrize("sde_name", list(SDES))
@pytest.mark.parametrize(("kind", "method"), SAMPLERS)
def test_every_sampler_takes_the_guided_score(sde_name, kind, method):
    """w = 0 draws the class p(x | k) (its mean, within sampling error); w = 2 moves the
    samples where the class is more certain (the posterior p(k | x) rises)."""
    sde, mix, k, n = _sde(sde_name), _overlapping_classes(), 0, 600
    cls = exact_class_score(mix, sde)
    with torch.no_grad():
        plain = _draw(classifier_free_score(cls, k, 0.0, 2), sde, kind, method, n,
                      torch.Generator().manual_seed(5))
        guided = _draw(classifier_free_score(cls, k, 2.0, 2), sde, kind, method, n,
                       torch.Generator().manual_seed(5))
    se = mix.S[k].diagonal().sqrt() / math.sqrt(n)
    assert ((plain.mean(0) - mix.mu[k]).abs() < 5 * se + 0.03).all(), plain.mean(0)
    p_plain, p_guided = _posterior(mix, sde, plain, k).mean(), _posterior(mix, sde, guided, k).mean()
    assert p_guided > p_plain + 0.02, (float(p_plain), float(p_guided))


def test_guided_score_checks_its_arguments():
    cls = exact_class_score(two_mode_mixture(), _sde("vp"))
    with pytest.raises(ValueError, match="outside the classes"):
        classifier_free_score(cls, 2, 1.0, null_label=2)
    with pytest.raises(ValueError, match="weight"):
        classifier_free_score(cls, 0, -1.0, null_label=2)
