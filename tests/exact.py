"""Closed-form perturbed densities and scores of Gaussian-mixture data under an affine SDE.

If x(0) ~ sum_k w_k N(mu_k, S_k) then x(t) ~ sum_k w_k N(a(t) mu_k, a(t)^2 S_k + s(t)^2 I), so its
log-density and score are exact. Works on any data rank by flattening.
"""

from __future__ import annotations

import math

import torch


class GaussianMixture:
    def __init__(self, weights, means, covs):
        self.w = torch.as_tensor(weights, dtype=torch.float64)
        self.mu = torch.as_tensor(means, dtype=torch.float64)  # (K, D)
        self.S = torch.as_tensor(covs, dtype=torch.float64)  # (K, D, D)
        self.D = self.mu.shape[1]

    def _comps(self, sde, t):
        if bool((t == t[0]).all()):  # a sampler's batch shares one time: build K components, not B*K
            t = t[:1]
        a = sde.mean_coeff(t.to(torch.float64))
        s = sde.std(t.to(torch.float64))
        eye = torch.eye(self.D, dtype=torch.float64)
        mu = a[:, None, None] * self.mu[None]  # (B, K, D)
        cov = a[:, None, None, None] ** 2 * self.S[None] + s[:, None, None, None] ** 2 * eye
        return mu, cov

    def log_prob_t(self, sde, x, t):
        """log p_t(x), shape (B,)."""
        xf = x.reshape(x.shape[0], -1).to(torch.float64)
        mu, cov = self._comps(sde, t)
        comp = torch.distributions.MultivariateNormal(mu, covariance_matrix=cov)
        return torch.logsumexp(comp.log_prob(xf[:, None]) + self.w.log(), dim=1)

    def score_t(self, sde, x, t):
        """grad_x log p_t(x), same shape and dtype as x."""
        xf = x.reshape(x.shape[0], -1).to(torch.float64)
        mu, cov = self._comps(sde, t)
        comp = torch.distributions.MultivariateNormal(mu, covariance_matrix=cov)
        resp = torch.softmax(comp.log_prob(xf[:, None]) + self.w.log(), dim=1)  # (B, K)
        diff = (xf[:, None] - mu).unsqueeze(-1)
        comp_scores = -torch.linalg.solve(cov, diff).squeeze(-1)  # (B, K, D)
        return (resp[..., None] * comp_scores).sum(1).reshape(x.shape).to(x.dtype)

    def score_fn(self, sde):
        return lambda x, t: self.score_t(sde, x, t)

    def sample(self, n, generator=None):
        k = torch.multinomial(self.w, n, replacement=True, generator=generator)
        L = torch.linalg.cholesky(self.S)
        z = torch.randn(n, self.D, dtype=torch.float64, generator=generator)
        return self.mu[k] + (L[k] @ z.unsqueeze(-1)).squeeze(-1), k

    def mean(self):
        return (self.w[:, None] * self.mu).sum(0)

    def cov(self):
        m = self.mean()
        second = (self.w[:, None, None] * (self.S + self.mu[:, :, None] * self.mu[:, None, :])).sum(0)
        return second - m[:, None] * m[None, :]


def two_mode_mixture():
    """A well-separated 2-D mixture with unequal weights and correlated components."""
    return GaussianMixture(
        weights=[0.3, 0.7],
        means=[[-2.0, 1.0], [2.0, -0.5]],
        covs=[[[0.25, 0.1], [0.1, 0.2]], [[0.3, -0.05], [-0.05, 0.15]]],
    )


def gaussian(mean, cov):
    return GaussianMixture([1.0], torch.as_tensor(mean)[None], torch.as_tensor(cov)[None])


def gaussian_logpdf(x, mean, var):
    """Isotropic Gaussian log-density per sample."""
    D = x[0].numel()
    d = (x - mean).reshape(x.shape[0], -1)
    return -0.5 * D * math.log(2 * math.pi * var) - (d**2).sum(1) / (2 * var)


def narrow_mixture():
    """A mixture inside [-1, 1]^2, the scale the paper's sigma_max = 50 was chosen for.

    Under VE the prior N(0, sigma_max^2 I) differs from the true p_T by about |x| / sigma_max nats per
    sample (zero on average): data far from the origin would blur the likelihood check.
    """
    return GaussianMixture(
        weights=[0.4, 0.6],
        means=[[-0.5, 0.3], [0.4, -0.2]],
        covs=[[[0.02, 0.005], [0.005, 0.03]], [[0.04, -0.01], [-0.01, 0.02]]],
    )
