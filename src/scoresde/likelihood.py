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

Tighter bounds on log P(k) (:func:`discrete_log_likelihood`): the uniform bound's gap is
KL(q || p(. | cell)); the importance-weighted bound over S uniform draws (Burda et al. 2016;
Ho et al. 2019) closes it as S grows, and i-DODE's truncated-normal proposal (Zheng et al. 2023)
matches the perturbation kernel the model was trained on. Cells and proposals are in
:mod:`scoresde.dequantization`.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch

from . import checks
from .dequantization import (
    check_discrete_input,
    check_levels,
    truncated_normal_draws,
    truncated_normal_entropy,
    truncated_normal_log_q,
    truncated_normal_start,
    uniform_draws,
    uniform_log_q,
)
from .sampling import check_finite, dopri5
from .sde import SDE
from .utils import Generator, batch_sum, rademacher, randn

DIVERGENCES = ("exact", "rademacher", "gaussian")
PROPOSALS = ("uniform", "truncated-normal")


def uniform_dequantize(k: torch.Tensor, levels: int, generator: Generator = None) -> torch.Tensor:
    """Map integer levels k in {0..L-1} to y = (k + u) / L in [0, 1), u ~ U[0, 1) (`data.Levels`)."""
    from .data import Levels

    check_levels(k, levels)
    checks.generator("generator", generator, k.shape[0], k.device)
    return Levels(levels, dequantized=True).to_unit(k, generator)


def bits_per_dim(logp: torch.Tensor, dim: int, levels: int, scale: float = 1.0) -> torch.Tensor:
    """bits/dim = -logp / (D ln 2) + log2(levels) - log2(scale); see the module docstring."""
    if not isinstance(logp, torch.Tensor):
        checks.number("logp", logp)
    else:
        checks.tensor("logp", logp, min_rank=0)
    dim = checks.whole("dim", dim, 1)
    levels = checks.whole("levels", levels, 2)
    scale = checks.number("scale", scale, 0.0, open_lo=True)
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


def _check_solver_args(score_fn, sde: SDE, eps, rtol, atol, divergence: str, n_probes: int) -> tuple:
    """The ODE solve's arguments: ``(eps, rtol, atol)`` as floats (see ``scoresde.checks``)."""
    checks.function("score_fn", score_fn)
    checks.sde(sde)
    checks.choice("divergence", divergence, DIVERGENCES, "divergence")
    if isinstance(n_probes, bool) or not isinstance(n_probes, numbers.Integral) or n_probes < 1:
        raise ValueError(f"n_probes must be an integer >= 1, got {n_probes!r}")
    return (checks.eps(eps, sde), checks.number("rtol", rtol, 0.0, open_lo=True),
            checks.number("atol", atol, 0.0, open_lo=True))


def _solve(score_fn, sde: SDE, x: torch.Tensor, probes: torch.Tensor, t0: float, rtol: float,
           atol: float, divergence: str, what: str):
    """log p_t0(x) = log p_T(x(T)) + int_t0^T div f~ dt (eq. 39) with the given probes, RK45."""
    rsde = sde.reverse(score_fn, probability_flow=True)
    div = divergence_fn(lambda y, t: rsde.sde(y, t)[0], divergence)
    B, count = x.shape[0], [0]

    def func(t, state):
        count[0] += 1
        return div(state[0], t.expand(B), probes)

    state0 = (x, torch.zeros(B, device=x.device, dtype=x.dtype))
    sol = dopri5(func, state0, t0, sde.T, rtol, atol, what)
    z, delta = (s[-1] for s in sol)
    return check_finite(sde.prior_logp(z) + delta, what), count[0]


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
    eps, rtol, atol = _check_solver_args(score_fn, sde, eps, rtol, atol, divergence, n_probes)
    checks.tensor("x", x, min_rank=2, what="(B, ...) of continuous data in model space")
    checks.generator("generator", generator, x.shape[0], x.device)
    probes = _probes(x, divergence, n_probes, generator)
    return _solve(score_fn, sde, x, probes, eps, rtol, atol, divergence, "log_likelihood")


# ---------------------------------------------------------------- discrete data: bounds on log P(k)


@dataclass
class DequantizedDraws:
    """S dequantisation draws per datum under one proposal q: ``log_p`` = log p(x_s) and
    ``log_q`` = log q(x_s), shape (B, S); ``log_q_mean`` = E_q log q exactly; ``t0`` the ODE's
    start; ``tau`` the truncation (truncated normal only); ``nfe`` of the one batched solve."""

    log_p: torch.Tensor
    log_q: torch.Tensor
    log_q_mean: float
    t0: float
    tau: float | None
    nfe: int


def _draw_probes(x: torch.Tensor, divergence: str, n_probes: int, generator: Generator) -> torch.Tensor:
    """Probes (K, B * S, ...) for draws x (B, S, ...): datum i's from ``generator[i]``, after its x."""
    B, S, shape = x.shape[0], x.shape[1], x.shape[2:]
    if divergence == "exact":
        return _probes(x.reshape(B * S, *shape), divergence, n_probes, generator)
    draw = rademacher if divergence == "rademacher" else randn
    v = draw((B, S * n_probes, *shape), generator, device=x.device, dtype=x.dtype)
    return v.reshape(B, S, n_probes, *shape).movedim(2, 0).reshape(n_probes, B * S, *shape)


def dequantized_log_densities(score_fn, sde: SDE, k: torch.Tensor, levels: int, scale: float = 1.0,
                              shift: float = 0.0, proposal: str = "uniform", samples: int = 1,
                              eps: float = 1e-5, rtol: float = 1e-5, atol: float = 1e-5,
                              divergence: str = "rademacher", n_probes: int = 1,
                              generator: Generator = None, tau: float | None = None) -> DequantizedDraws:
    """Draw ``samples`` dequantisations x_s ~ q(. | k) per datum and evaluate log p(x_s) by one
    probability-flow ODE solve over all B * S draws (eq. 39). ``proposal``: ``uniform`` (the ODE
    starts at ``eps``) or ``truncated-normal`` (starts at t0 of
    :func:`~scoresde.dequantization.truncated_normal_start`). Datum i's draws, then its probes
    (``n_probes`` per draw, or the exact divergence), come from ``generator[i]``.
    """
    checks.choice("proposal", proposal, PROPOSALS, "proposal")
    check_discrete_input(k, levels, proposal, samples, scale, tau, shift, generator)
    eps, rtol, atol = _check_solver_args(score_fn, sde, eps, rtol, atol, divergence, n_probes)
    dim = k[0].numel()
    if proposal == "uniform":
        t0, tau = float(eps), None
        x = uniform_draws(k, levels, scale, shift, samples, generator)
        log_q = torch.full(x.shape[:2], uniform_log_q(dim, levels, scale), dtype=x.dtype, device=x.device)
        log_q_mean = uniform_log_q(dim, levels, scale)
    else:
        t0, tau = truncated_normal_start(sde, levels, scale, eps, tau)
        tt = torch.tensor([t0], dtype=torch.float64)
        a, s = sde.mean_coeff(tt).item(), sde.std(tt).item()
        x, z = truncated_normal_draws(k, levels, scale, shift, samples, a, s, tau, generator)
        log_q, log_q_mean = truncated_normal_log_q(z, s, tau), -truncated_normal_entropy(dim, s, tau)
    probes = _draw_probes(x, divergence, n_probes, generator)
    B, S = x.shape[:2]
    logp, nfe = _solve(score_fn, sde, x.reshape(B * S, *x.shape[2:]), probes, t0, rtol, atol, divergence,
                       "discrete_log_likelihood")
    return DequantizedDraws(logp.reshape(B, S), log_q.to(logp.dtype), log_q_mean, t0, tau, nfe)


def reduce_bound(draws: DequantizedDraws, method: str) -> torch.Tensor:
    """The bound on log P(k) (B,) from the draws: ``uniform`` / ``truncated-normal``: the mean
    (1/S) sum_s log p(x_s) - E_q log q (eq. 6 of Ho et al. with the exact entropy); ``importance``:
    log (1/S) sum_s p(x_s) / q(x_s) (the importance-weighted bound, Burda et al. 2016, eq. 8)."""
    if method == "importance":
        log_w = draws.log_p - draws.log_q
        return torch.logsumexp(log_w, dim=1) - math.log(log_w.shape[1])
    return draws.log_p.mean(1) - draws.log_q_mean


def discrete_log_likelihood(score_fn, sde: SDE, k: torch.Tensor, levels: int, scale: float = 1.0,
                            shift: float = 0.0, dequantization: str = "uniform", samples: int = 1,
                            eps: float = 1e-5, rtol: float = 1e-5, atol: float = 1e-5,
                            divergence: str = "rademacher", n_probes: int = 1,
                            generator: Generator = None, tau: float | None = None):
    """A lower bound on log P(k) in nats per datum for integer data k in {0..L-1}^D, modelled in
    the space x = scale * (k + u) / L + shift by the probability-flow ODE. Returns ``(bound (B,), nfe)``.

    ``dequantization`` (see :mod:`scoresde.dequantization` for the cells and proposals):

    - ``uniform``: E_u log p_eps(x) - D log(L / scale), averaged over ``samples`` draws: the
      paper's bound (App. D.2); -bound / (D ln 2) is its bits/dim with the +log2 L - log2 scale
      offset of :func:`bits_per_dim`.
    - ``importance``: log (1/S) sum_s p_eps(x_s) / q(x_s) over S = ``samples`` uniform draws:
      a tighter bound (E over draws), non-decreasing in S and reaching log P(k) as S -> inf.
    - ``truncated-normal``: i-DODE's training-free proposal, x(t0) = a(t0) c_k + s(t0) z,
      z ~ N(0, I) truncated to [-tau, tau]^D with a(t0) h / s(t0) = tau (the support fills the
      cell): E_z log p_t0(x(t0)) + D [log s(t0) + H(tau)], averaged over S draws; it bounds the
      discrete model P_t0(k) of x(t0) / a(t0). ``tau=None``: t0 = eps and tau from it (i-DODE's
      code); a number: t0 = max(eps, t*) with s(t*) / a(t*) = h / tau.

    The Hutchinson noise is separate from the dequantisation noise: ``n_probes`` probes per draw
    (or ``divergence="exact"``, D backward passes, for small D); with a stochastic divergence the
    importance bound is a bound only in the limit of many probes (exp of a noisy log-density is
    biased upwards by about half its variance). Bad input is refused before any score evaluation.
    """
    check_discrete_input(k, levels, dequantization, samples, scale, tau, shift, generator)
    _check_solver_args(score_fn, sde, eps, rtol, atol, divergence, n_probes)
    proposal = "truncated-normal" if dequantization == "truncated-normal" else "uniform"
    draws = dequantized_log_densities(score_fn, sde, k, levels, scale, shift, proposal, samples, eps, rtol,
                                      atol, divergence, n_probes, generator, tau)
    return reduce_bound(draws, dequantization), draws.nfe


def discrete_bits_per_dim(log_prob: torch.Tensor, dim: int) -> torch.Tensor:
    """bits/dim = -log P(k) / (D ln 2) of a bound on the discrete log-probability (no offset: the
    cell volume is inside the bound; for ``uniform`` it equals :func:`bits_per_dim` of E log p_x)."""
    if not isinstance(log_prob, torch.Tensor):
        checks.number("log_prob", log_prob)
    else:
        checks.tensor("log_prob", log_prob, min_rank=0)
    dim = checks.whole("dim", dim, 1)
    return -log_prob / (dim * math.log(2.0))
