"""Bounds on discrete log-probabilities against exact cell masses of a Gaussian model.

Integer data on a 4-level 2-D grid; the model is a diagonal Gaussian with exact perturbed scores and
the exact p_T as the ODE's prior, so the only error left is the ODE's. For a diagonal Gaussian the
discrete model P_t(k) = int_{a(t) C_k} p_t(x) dx is a product of normal CDF differences, and the
uniform and truncated-normal bounds have closed forms (E of a quadratic), so every estimator is
checked twice: its mean equals the closed-form bound, and that bound lies below log P_t(k).
"""

import math

import pytest
import torch
from conftest import PAPER_SDES
from exact import gaussian

from scoresde import bits_per_dim, discrete_bits_per_dim, discrete_log_likelihood, log_likelihood
from scoresde.dequantization import (
    half_width,
    truncated_normal,
    truncated_normal_entropy,
    truncated_normal_log_q,
    truncated_normal_start,
)
from scoresde.likelihood import dequantized_log_densities, reduce_bound
from scoresde.utils import per_sample_generators

L, EPS = 4, 1e-5
MEAN_LEVELS = torch.tensor([1.6, 2.3], dtype=torch.float64)  # level units
SD_LEVELS = torch.tensor([0.9, 0.7], dtype=torch.float64)
GRID = torch.cartesian_prod(torch.arange(L), torch.arange(L))  # all 16 cells


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


class Problem:
    """The Gaussian model of one SDE in its model space (VE on [0, 1], VP / sub-VP on [-1, 1])."""

    def __init__(self, name):
        self.sde = PAPER_SDES[name]()
        self.scale, self.shift = (1.0, 0.0) if name == "ve" else (2.0, -1.0)
        self.m = self.scale * MEAN_LEVELS / L + self.shift
        self.var = (self.scale * SD_LEVELS / L) ** 2
        self.model = gaussian(self.m, torch.diag(self.var))
        T = torch.full((1,), self.sde.T, dtype=torch.float64)
        self.sde.prior_logp = lambda z: self.model.log_prob_t(self.sde, z, T.expand(len(z)))
        self.score_fn = self.model.score_fn(self.sde)

    def coeffs(self, t):
        tt = torch.tensor([t], dtype=torch.float64)
        return self.sde.mean_coeff(tt).item(), self.sde.std(tt).item()

    def marginal(self, t):
        a, s = self.coeffs(t)
        return a * self.m, a**2 * self.var + s**2

    def exact(self, k, t=EPS):
        """log P_t(k): the mass of N(a m, a^2 C + s^2 I) on the cell a(t) C_k."""
        a, _ = self.coeffs(t)
        mu, var = self.marginal(t)
        normal = torch.distributions.Normal(mu, var.sqrt())
        lo = a * (self.scale * k.double() / L + self.shift)
        hi = a * (self.scale * (k.double() + 1) / L + self.shift)
        return torch.log(normal.cdf(hi) - normal.cdf(lo)).sum(1)

    def uniform_bound(self, k):
        """E_u log p_eps(x) - D log(L / scale), x uniform on C_k: E (x - mu)^2 = (c - mu)^2 + h^2 / 3."""
        mu, var = self.marginal(EPS)
        h = half_width(L, self.scale)
        c = self.scale * (k.double() + 0.5) / L + self.shift
        second = (c - mu) ** 2 + h**2 / 3
        logp = (-0.5 * torch.log(2 * math.pi * var) - second / (2 * var)).sum(1)
        return logp - 2 * math.log(L / self.scale)

    def truncated_normal_bound(self, k, tau=None):
        """E_z log p_t0(a c + s z) + D [log s + H(tau)], E z^2 = 1 - 2 tau phi(tau) / Z."""
        t0, tau = truncated_normal_start(self.sde, L, self.scale, EPS, tau)
        a, s = self.coeffs(t0)
        mu, var = self.marginal(t0)
        c = self.scale * (k.double() + 0.5) / L + self.shift
        Z, phi = math.erf(tau / math.sqrt(2)), math.exp(-0.5 * tau**2) / math.sqrt(2 * math.pi)
        second = (a * c - mu) ** 2 + s**2 * (1 - 2 * tau * phi / Z)
        logp = (-0.5 * torch.log(2 * math.pi * var) - second / (2 * var)).sum(1)
        return logp + truncated_normal_entropy(2, s, tau), t0


def replicated(problem, method, samples, reps, seed, tau=None):
    """``reps`` independent estimates of a bound per cell, shape (reps, 16), in one ODE solve."""
    k = GRID.repeat(reps, 1)
    bound, nfe = discrete_log_likelihood(problem.score_fn, problem.sde, k, L, problem.scale, problem.shift,
                                         method, samples, eps=EPS, divergence="exact",
                                         generator=torch.Generator().manual_seed(seed), tau=tau)
    assert nfe > 10 and torch.isfinite(bound).all()
    return bound.reshape(reps, len(GRID))


def draws(problem, proposal, samples, seed, tau=None):
    """``samples`` draws per cell of one proposal: the bound's estimate and its standard error."""
    d = dequantized_log_densities(problem.score_fn, problem.sde, GRID, L, problem.scale, problem.shift,
                                  proposal, samples, eps=EPS, divergence="exact",
                                  generator=torch.Generator().manual_seed(seed), tau=tau)
    assert d.nfe > 10 and torch.isfinite(d.log_p).all()
    return reduce_bound(d, proposal), d.log_p.std(1) / math.sqrt(samples), d.t0


def test_uniform_bound_is_the_closed_form_and_below_the_exact_mass(sde):
    p = Problem(sde.name)
    est, se, _ = draws(p, "uniform", 256, seed=0)
    closed, exact = p.uniform_bound(GRID), p.exact(GRID)
    assert (closed < exact).all()
    # the paper's gap, averaged over the 16 cells: measured 0.29 nats for every SDE
    assert 0.1 < (exact - closed).mean() < 0.3
    assert ((est - closed).abs() < 4 * se + 1e-3).all(), (est - closed) / se


def test_importance_closes_most_of_the_gap(sde):
    p = Problem(sde.name)
    exact, uniform = p.exact(GRID), p.uniform_bound(GRID)
    iw64 = replicated(p, "importance", 64, 24, seed=1)
    iw4 = replicated(p, "importance", 4, 24, seed=2)
    se = iw64.std(0) / math.sqrt(iw64.shape[0])
    # E[IWAE_S] <= log P(k): the mean of 24 replicates within 4 standard errors + ODE tolerance
    assert (iw64.mean(0) <= exact + 4 * se + 1e-3).all(), iw64.mean(0) - exact
    gap64, gap4, gap_u = (exact - iw64.mean(0)).mean(), (exact - iw4.mean(0)).mean(), (exact - uniform).mean()
    assert gap64 < 0.1 * gap_u  # measured: 64 draws leave 2% of the uniform gap (0.0056 of 0.29 nats)
    assert gap64 < gap4 < gap_u  # the bound rises with S


@pytest.mark.parametrize("tau", [None, 3.0, 1.0])
def test_truncated_normal_is_finite_and_a_bound(sde, tau):
    p = Problem(sde.name)
    est, se, t0 = draws(p, "truncated-normal", 128, seed=3, tau=tau)
    closed, t0_closed = p.truncated_normal_bound(GRID, tau)
    exact = p.exact(GRID, t0)
    assert t0 == t0_closed and torch.isfinite(est).all() and (closed < exact).all()
    assert ((est - closed).abs() < 4 * se + 1e-3).all(), (est - closed) / se
    if tau is None:  # i-DODE's start at eps: the model is broad at this scale, so the bound is loose
        assert t0 == EPS and (exact - closed).mean() > 1.0


def test_truncated_normal_start_fills_the_cell(sde):
    h = half_width(L, 2.0)
    t0, tau = truncated_normal_start(sde, L, 2.0, EPS, 3.0)
    a, s = Problem(sde.name).coeffs(t0)
    assert tau == pytest.approx(3.0) and s / a == pytest.approx(h / 3.0, rel=1e-9) and t0 > EPS
    t0, tau = truncated_normal_start(sde, L, 2.0, EPS)
    a, s = Problem(sde.name).coeffs(EPS)
    assert t0 == EPS and tau == pytest.approx(a * h / s)
    if sde.name == "ve":  # s(0) = sigma_min: a tau beyond h / sigma_min starts at eps with tau lowered
        t0, tau = truncated_normal_start(sde, 256, 1.0, EPS, 3.0)
        assert t0 == EPS and tau < 3.0


def test_truncated_normal_draws_and_entropy():
    tau, s = 1.5, 0.2
    z = truncated_normal((20000, 1, 2), tau, torch.Generator().manual_seed(4))
    Z, phi = math.erf(tau / math.sqrt(2)), math.exp(-0.5 * tau**2) / math.sqrt(2 * math.pi)
    assert z.abs().max() <= tau and z.mean().abs() < 0.02
    assert (z**2).mean().item() == pytest.approx(1 - 2 * tau * phi / Z, abs=0.02)
    neg_log_q = -truncated_normal_log_q(z, s, tau).mean().item()
    assert neg_log_q == pytest.approx(truncated_normal_entropy(2, s, tau), abs=0.02)


def test_one_uniform_draw_is_the_paper_bits_per_dim():
    """samples=1: -bound / (D ln 2) equals bits_per_dim of log p_x on the same draw (the +log2 L -
    log2 scale offset), and importance with one draw equals uniform."""
    p = Problem("vp")
    k = GRID[:5]
    gens = lambda: per_sample_generators(7, 0, 5, purpose="likelihood")  # noqa: E731
    bound, _ = discrete_log_likelihood(p.score_fn, p.sde, k, L, p.scale, p.shift, "uniform", generator=gens())
    iw, _ = discrete_log_likelihood(p.score_fn, p.sde, k, L, p.scale, p.shift, "importance", generator=gens())
    g = gens()
    u = torch.stack([torch.rand(2, generator=gi) for gi in g])
    logp, _ = log_likelihood(p.score_fn, p.sde, p.scale * (k + u) / L + p.shift, generator=g)
    torch.testing.assert_close(discrete_bits_per_dim(bound, 2), bits_per_dim(logp, 2, L, p.scale))
    torch.testing.assert_close(iw, bound)


def test_per_sample_generators_make_a_datum_independent_of_its_batch():
    p = Problem("subvp")
    both = dequantized_log_densities(p.score_fn, p.sde, GRID[:2], L, p.scale, p.shift, samples=3,
                                     generator=per_sample_generators(0, 0, 2, purpose="likelihood"))
    alone = dequantized_log_densities(p.score_fn, p.sde, GRID[1:2], L, p.scale, p.shift, samples=3,
                                      generator=per_sample_generators(0, 1, 1, purpose="likelihood"))
    # the same draws and probes; the adaptive steps differ with the batch, within the ODE tolerance
    torch.testing.assert_close(both.log_p[1:], alone.log_p, atol=1e-3, rtol=0)
    assert reduce_bound(both, "importance").shape == (2,)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"dequantization": "gaussian"}, "unknown dequantization 'gaussian'; choose one of uniform, importance"),
    ({"samples": 0}, "samples must be an integer >= 1, got 0"),
    ({"samples": 2.5}, "samples must be an integer >= 1, got 2.5"),
    ({"samples": True}, "samples must be an integer >= 1, got True"),
    ({"levels": 1}, "levels must be an integer >= 2, got 1"),
    ({"k": torch.tensor([[0, 4]])}, r"k must lie in 0..3 \(levels=4\), got the value 4"),
    ({"k": torch.tensor([[-1, 0]])}, r"k must lie in 0..3 \(levels=4\), got the value -1"),
    ({"k": torch.tensor([[0.0, 1.5]])}, r"k must hold integer levels 0..3, got the value 1.5"),
    ({"k": torch.tensor([[0.0, float("nan")]])}, "k must hold integer levels 0..3, got the value nan"),
    ({"k": torch.tensor([[0, 255]], dtype=torch.uint8)}, r"k must lie in 0..3 \(levels=4\), got the value 255"),  # noqa: E501
    ({"scale": 0.0}, "scale must be a positive number"),
    ({"tau": -1.0}, "tau must be > 0"),
    ({"divergence": "hutch"}, "unknown divergence 'hutch'"),
    ({"n_probes": 0}, "n_probes must be an integer >= 1, got 0"),
])  # fmt: skip
def test_bad_input_is_refused_before_any_score_evaluation(kwargs, message):
    """One ValueError naming the value; a counting score function sees no call."""
    calls = []

    def counting(x, t):
        calls.append(1)
        return -x

    args = {"k": GRID[:2], "levels": L, **kwargs}
    with pytest.raises(ValueError, match=message):
        discrete_log_likelihood(counting, PAPER_SDES["vp"](), **args)
    assert not calls


def test_uint8_levels_beyond_256_are_not_wrapped():
    from scoresde.dequantization import check_discrete_input

    check_discrete_input(torch.tensor([[0, 255]], dtype=torch.uint8), 1024, "uniform", 1, 1.0)  # no error


def print_gaps(reps: int = 24) -> None:
    """The gaps log P(k) - bound (nats, mean over the 16 cells) quoted in docs/likelihood.md:
    ``PYTHONPATH=src:tests python -c "from test_likelihood_discrete import print_gaps; print_gaps()"``."""
    torch.set_default_dtype(torch.float64)
    for name in PAPER_SDES:
        p = Problem(name)
        exact, row = p.exact(GRID), {"uniform": (p.exact(GRID) - p.uniform_bound(GRID)).mean().item()}
        for S in (4, 64):
            iw = replicated(p, "importance", S, reps, seed=S).mean(0)
            row[f"importance S={S}"] = (exact - iw).mean().item()
        for tau in (None, 3.0, 1.0):
            closed, t0 = p.truncated_normal_bound(GRID, tau)
            row[f"truncated-normal tau={tau} (t0={t0:.3g})"] = (p.exact(GRID, t0) - closed).mean().item()
        print(name, "  ".join(f"{key}: {value:.4f}" for key, value in row.items()))
