"""Exact likelihoods through the probability-flow ODE (Song et al. 2021, Section 4.3 and Appendix D.2).

log p_0(x(0)) = log p_T(x(T)) + int_0^T div f~(x(t), t) dt (eq. 39), where f~ is the drift of the
probability-flow ODE (eq. 13). The divergence is exact (D backward passes, for small D) or the
Skilling-Hutchinson estimate E_v[v^T (d f~ / dx) v] with Rademacher or Gaussian probes v, drawn once
per solve so that the ODE stays deterministic for the adaptive solver.

Bits per dimension for discrete data (:func:`bits_per_dim`): a datum with ``L`` levels per dimension,
k in {0, ..., L-1}^D, is dequantised to y = (k + u) / L with u ~ U[0, 1)^D, so each k owns a cell of
volume L^{-D} in [0, 1)^D and log P(k) >= E_u log p_y(y) - D log L. The model sees x = scale * y + shift
(scale 1 for data in [0, 1], 2 for [-1, 1]), so log p_y(y) = log p_x(x) + D log scale. Hence

    bits/dim = -E_u log p_x(x) / (D ln 2) + log2(L) - log2(scale),

the paper's "+8" for 256 levels in [0, 1] and "+7" for [-1, 1]. Train on the same map from levels to
model space, or the likelihood measures the model on data it never saw.
"""

from __future__ import annotations

import math

import torch

from .sampling import check_finite, dopri5
from .sde import SDE
from .utils import Generator, batch_sum, rademacher, rand, randn

DIVERGENCES = ("exact", "rademacher", "gaussian")


def uniform_dequantize(k: torch.Tensor, levels: int, generator: Generator = None) -> torch.Tensor:
    """Map integer levels k in {0..L-1} to y = (k + u) / L in [0, 1), u ~ U[0, 1)."""
    u = rand(k.shape, generator, device=k.device, dtype=torch.get_default_dtype())
    return (k.to(u.dtype) + u) / levels


def bits_per_dim(logp: torch.Tensor, dim: int, levels: int, scale: float = 1.0) -> torch.Tensor:
    """bits/dim = -logp / (D ln 2) + log2(levels) - log2(scale); see the module docstring."""
    return -logp / (dim * math.log(2.0)) + math.log2(levels) - math.log2(scale)


def _probes(x: torch.Tensor, divergence: str, n_probes: int, generator: Generator) -> torch.Tensor:
    """Probe vectors of shape (K, B, ...): the basis e_1..e_D for ``exact``, else K random draws."""
    B, D = x.shape[0], x[0].numel()
    if divergence == "exact":
        basis = torch.eye(D, device=x.device, dtype=x.dtype).reshape(D, 1, *x.shape[1:])
        return basis.expand(D, B, *x.shape[1:])
    draw = rademacher if divergence == "rademacher" else randn
    return draw((B, n_probes, *x.shape[1:]), generator, device=x.device, dtype=x.dtype).transpose(0, 1)


def divergence_fn(drift, divergence: str = "rademacher"):
    """``div(y, t, probes) -> (drift(y, t), div drift(y, t))`` with all probes in one batched pass.

    The batch is replicated once per probe (K * B rows), one forward and one vector-Jacobian
    product give v^T J v for every probe; ``exact`` sums over the D basis probes, the estimators
    average over theirs.
    """

    def div(y, t, probes):
        K, B = probes.shape[0], y.shape[0]
        with torch.enable_grad():
            y_rep = y.detach().unsqueeze(0).expand(K, *y.shape).reshape(K * B, *y.shape[1:])
            y_rep.requires_grad_(True)
            f = drift(y_rep, t.repeat(K))
            v = probes.reshape(K * B, *y.shape[1:])
            (vjp,) = torch.autograd.grad(f, y_rep, grad_outputs=v)
        quad = batch_sum(vjp * v).reshape(K, B)
        estimate = quad.sum(0) if divergence == "exact" else quad.mean(0)
        return f[:B].detach(), estimate.detach()

    return div


def log_likelihood(
    score_fn,
    sde: SDE,
    x: torch.Tensor,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    eps: float = 1e-5,
    divergence: str = "rademacher",
    n_probes: int = 1,
    generator: Generator = None,
):
    """log p(x) in nats per sample by the probability-flow ODE from eps to T (eq. 39), RK45.

    ``x`` is continuous data in model space (dequantise first). Returns ``(logp (B,), nfe)``.
    """
    if divergence not in DIVERGENCES:
        raise ValueError(f"unknown divergence {divergence!r}; choose one of {', '.join(DIVERGENCES)}")
    if n_probes < 1:
        raise ValueError(f"n_probes must be >= 1, got {n_probes}")
    rsde = sde.reverse(score_fn, probability_flow=True)
    div = divergence_fn(lambda y, t: rsde.sde(y, t)[0], divergence)
    probes = _probes(x, divergence, n_probes, generator)
    B, count = x.shape[0], [0]

    def func(t, state):
        count[0] += 1
        return div(state[0], t.expand(B), probes)

    state0 = (x, torch.zeros(B, device=x.device, dtype=x.dtype))
    sol = dopri5(func, state0, eps, sde.T, rtol, atol, "log_likelihood")
    z, delta = (s[-1] for s in sol)
    return check_finite(sde.prior_logp(z) + delta, "log_likelihood"), count[0]
