"""Closed forms for controllable generation on Gaussian-mixture data (float64).

For x(0) ~ sum_k w_k N(mu_k, S_k) in 2-D:
* the noisy classifier p_t(k | x) = w_k N(x; a mu_k, a^2 S_k + s^2 I) / p_t(x);
* the conditional p(x2 | x1 = y) = sum_k w'_k N(mu_k2 + S_k21 / S_k11 (y - mu_k1),
  S_k22 - S_k21^2 / S_k11) with w'_k proportional to w_k N(y; mu_k1, S_k11).
"""

from __future__ import annotations

import torch
from exact import GaussianMixture


def class_log_prob(mix: GaussianMixture, sde, label: int):
    """log p_t(y = label | x), the exact noise-conditional classifier; (x, t) -> (B,)."""

    def log_prob(x, t):
        xf = x.reshape(x.shape[0], -1).to(torch.float64)
        mu, cov = mix._comps(sde, t)
        comp = torch.distributions.MultivariateNormal(mu, covariance_matrix=cov)
        joint = comp.log_prob(xf[:, None]) + mix.w.log()
        return (joint[:, label] - torch.logsumexp(joint, dim=1)).to(x.dtype)

    return log_prob


def component(mix: GaussianMixture, k: int) -> GaussianMixture:
    return GaussianMixture([1.0], mix.mu[k : k + 1], mix.S[k : k + 1])


def conditional_x2(mix: GaussianMixture, y: float):
    """(weights, means, stds) of the 1-D mixture p(x2 | x1 = y)."""
    s11, s21, s22 = mix.S[:, 0, 0], mix.S[:, 1, 0], mix.S[:, 1, 1]
    logw = mix.w.log() - 0.5 * (y - mix.mu[:, 0]) ** 2 / s11 - 0.5 * torch.log(s11)
    w = torch.softmax(logw, 0)
    mean = mix.mu[:, 1] + s21 / s11 * (y - mix.mu[:, 0])
    std = torch.sqrt(s22 - s21**2 / s11)
    return w, mean, std


def sample_conditional_x2(mix: GaussianMixture, y: float, n: int, generator) -> torch.Tensor:
    w, mean, std = conditional_x2(mix, y)
    k = torch.multinomial(w, n, replacement=True, generator=generator)
    return mean[k] + std[k] * torch.randn(n, dtype=torch.float64, generator=generator)


def wasserstein1(a: torch.Tensor, b: torch.Tensor) -> float:
    """1-D Wasserstein-1 distance between two equal-size samples (sorted differences)."""
    return float((torch.sort(a).values - torch.sort(b).values).abs().mean())


def noise_floor(mix: GaussianMixture, y: float, n: int, seed: int = 123, repeats: int = 8) -> float:
    """Mean W1 between two independent exact samples of size n: the two-sample noise floor."""
    gen = torch.Generator().manual_seed(seed)
    return sum(wasserstein1(sample_conditional_x2(mix, y, n, gen), sample_conditional_x2(mix, y, n, gen))
               for _ in range(repeats)) / repeats


def bimodal_mixture() -> GaussianMixture:
    """Two modes that overlap in x1 near 0 and are apart in x2: p(x2 | x1 = 0) is bimodal."""
    return GaussianMixture(
        weights=[0.4, 0.6],
        means=[[-0.6, 1.0], [0.6, -1.0]],
        covs=[[[0.3, 0.05], [0.05, 0.1]], [[0.3, -0.05], [-0.05, 0.1]]],
    )


def correlated_gaussian(rho: float = 0.9) -> GaussianMixture:
    return GaussianMixture([1.0], [[0.0, 0.0]], [[[1.0, rho], [rho, 1.0]]])


def fast_score_fn(mix: GaussianMixture, sde):
    """The exact score of ``mix`` under ``sde`` for a batch sharing one time (a sampler's batch),
    with K 2x2 inverses instead of one solve per (sample, component): fast for many particles."""

    def score(x, t):
        if not bool((t == t[0]).all()):
            return mix.score_t(sde, x, t)
        xf = x.reshape(x.shape[0], -1).to(torch.float64)
        mu, cov = mix._comps(sde, t[:1])
        mu, cov = mu[0], cov[0]  # (K, D), (K, D, D)
        prec = torch.linalg.inv(cov)
        diff = xf[:, None] - mu  # (B, K, D)
        g = -torch.einsum("kij,bkj->bki", prec, diff)
        logdet = torch.logdet(cov)
        logp = 0.5 * (diff * g).sum(-1) - 0.5 * logdet + mix.w.log()
        resp = torch.softmax(logp, dim=1)
        return (resp[..., None] * g).sum(1).reshape(x.shape).to(x.dtype)

    return score
