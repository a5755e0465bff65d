"""Closed-form posteriors of linear inverse problems under Gaussian-mixture priors (float64).

For x ~ sum_k w_k N(mu_k, S_k) and y = A x + sigma n, n ~ N(0, I), the posterior is the mixture
    p(x | y) = sum_k w'_k N(mu'_k, S'_k),   w'_k propto w_k N(y; A mu_k, A S_k A^T + sigma^2 I),
    mu'_k = mu_k + G_k (y - A mu_k),  S'_k = S_k - G_k A S_k,  G_k = S_k A^T (A S_k A^T + sigma^2 I)^-1,
which also holds for sigma = 0 when A S_k A^T is invertible (then S'_k is singular along A's rows).
"""

from __future__ import annotations

import torch
from exact import GaussianMixture


def posterior(mix: GaussianMixture, A: torch.Tensor, y: torch.Tensor, noise_std: float):
    """(weights (K,), means (K, D), covs (K, D, D)) of p(x | y) for one measurement y (m,)."""
    A, y = A.double(), y.double()
    C = A @ mix.S @ A.T + noise_std**2 * torch.eye(A.shape[0], dtype=torch.float64)  # (K, m, m)
    resid = y - mix.mu @ A.T  # (K, m)
    comp = torch.distributions.MultivariateNormal(mix.mu @ A.T, covariance_matrix=C)
    w = torch.softmax(mix.w.log() + comp.log_prob(y), 0)
    G = mix.S @ A.T @ torch.linalg.inv(C)  # (K, D, m)
    means = mix.mu + (G @ resid[..., None]).squeeze(-1)
    covs = mix.S - G @ A @ mix.S
    return w, means, 0.5 * (covs + covs.transpose(1, 2))


def sample_posterior(post, n: int, generator) -> torch.Tensor:
    """n draws from a (possibly singular) Gaussian mixture (weights, means, covs)."""
    w, means, covs = post
    k = torch.multinomial(w, n, replacement=True, generator=generator)
    evals, evecs = torch.linalg.eigh(covs)
    roots = evecs * evals.clamp(min=0).sqrt()[:, None, :]
    z = torch.randn(n, means.shape[1], dtype=torch.float64, generator=generator)
    return means[k] + (roots[k] @ z[..., None]).squeeze(-1)


def directions(D: int, count: int = 64, seed: int = 7) -> torch.Tensor:
    g = torch.randn(count, D, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return g / g.norm(dim=1, keepdim=True)


def sliced_w2(a: torch.Tensor, b: torch.Tensor, dirs: torch.Tensor) -> float:
    """Sliced Wasserstein-2 between two equal-size samples (n, D): sqrt of the mean over
    directions of the 1-D W2^2 (sorted projections)."""
    pa = torch.sort(a.reshape(len(a), -1).double() @ dirs.T, dim=0).values
    pb = torch.sort(b.reshape(len(b), -1).double() @ dirs.T, dim=0).values
    return float(((pa - pb) ** 2).mean().sqrt())


def sw2_floor(post, n: int, dirs: torch.Tensor, repeats: int = 6, seed: int = 11) -> float:
    """Mean sliced W2 between two independent exact samples of size n: the two-sample noise floor."""
    gen = torch.Generator().manual_seed(seed)
    return sum(sliced_w2(sample_posterior(post, n, gen), sample_posterior(post, n, gen), dirs)
               for _ in range(repeats)) / repeats


def mode_weights(mix: GaussianMixture, x: torch.Tensor):
    """(mean, standard error) over samples of the prior responsibilities p(k | x).

    Since k and y are independent given x, E[p(k | x) | y] = p(k | y) = w'_k: the sample mean
    estimates the posterior mode weights without bias."""
    xf = x.reshape(len(x), -1).double()
    comp = torch.distributions.MultivariateNormal(mix.mu, covariance_matrix=mix.S)
    resp = torch.softmax(comp.log_prob(xf[:, None]) + mix.w.log(), dim=1)
    return resp.mean(0), resp.std(0) / len(x) ** 0.5


def image_mixture(side: int = 4, seed: int = 3) -> GaussianMixture:
    """A two-component mixture of side x side images (D = side^2): smooth, distinct means (a
    bright top-left vs bottom-right blob, overlapping components) and random correlated
    covariances."""
    gen = torch.Generator().manual_seed(seed)
    D = side * side
    r = torch.arange(side, dtype=torch.float64)
    blob = torch.exp(-((r[:, None] - 0.5) ** 2 + (r[None, :] - 0.5) ** 2) / 2.0).reshape(-1)
    means = 0.5 * torch.stack([blob - 0.5, blob.flip(0) - 0.5])
    covs = []
    for _ in range(2):
        L = 0.25 * torch.randn(D, D, dtype=torch.float64, generator=gen) / D**0.5
        covs.append(L @ L.T + 0.04 * torch.eye(D, dtype=torch.float64))
    return GaussianMixture([0.45, 0.55], means, torch.stack(covs))
