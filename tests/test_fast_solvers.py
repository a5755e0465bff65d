"""Time grids and the fast probability-flow ODE solvers (DPM-Solver-2/-3, DPM-Solver++(2M), EDM's
Heun) against exact answers: lambda(t) in closed form, the Gaussian's linear ODE solution (orders of
convergence), the Gaussian mixture per mode at coarse step counts."""

import math

import pytest
import torch
from exact import gaussian, two_mode_mixture

from scoresde.sampling import (
    METHODS,
    ODE_METHODS,
    SCHEDULES,
    get_schedule,
    grid_end,
    karras,
    log_snr,
    log_snr_inverse,
    logsnr_uniform,
    ode_sample,
    pc_sample,
    time_uniform,
)
from scoresde.sampling.common import noise_level

F64 = torch.float64


def test_log_snr_closed_form_and_inverse(sde):
    """lambda = log(a / s) from the kernel's own a(t), s(t); the inverse returns t (float64)."""
    t = torch.linspace(sde.sampling_eps, sde.T, 201, dtype=F64)
    lam = log_snr(sde, t)
    assert torch.allclose(lam, torch.log(sde.mean_coeff(t) / sde.std(t)), rtol=1e-12, atol=1e-12)
    assert bool((lam[1:] < lam[:-1]).all())
    assert torch.allclose(log_snr_inverse(sde, lam), t, rtol=1e-9, atol=1e-12)


def test_schedules_are_explicit_decreasing_grids(sde):
    eps = sde.sampling_eps
    for name, fn in SCHEDULES.items():
        grid = fn(sde, 10, eps, dtype=F64)
        assert get_schedule(name) is fn
        assert grid.shape == (11,) and grid[0] == sde.T and grid[-1] == eps
        assert bool((grid[1:] < grid[:-1]).all()), name
    lam = log_snr(sde, logsnr_uniform(sde, 10, eps, dtype=F64))
    assert torch.allclose(lam.diff(), lam.diff()[:1].expand(10), rtol=1e-9)
    assert torch.allclose(time_uniform(sde, 10, eps, dtype=F64).diff(), torch.full((10,), -(sde.T - eps) / 10,
                                                                                  dtype=F64))
    sigma = torch.exp(-log_snr(sde, karras(sde, 10, eps, rho=7.0, dtype=F64)))
    root = sigma ** (1 / 7)  # EDM eq. 5: sigma^(1/rho) is linear in the step index
    assert torch.allclose(root.diff(), root.diff()[:1].expand(10), rtol=1e-9)
    with pytest.raises(ValueError, match="unknown schedule 'cosine'"):
        get_schedule("cosine")


def exact_gaussian_flow(sde, x_T, mu, c, eps):
    """The probability-flow ODE of N(mu, c^2 I) data is linear: x(eps) = a mu + r(eps) / r(T) (x_T - a_T mu),
    r(t)^2 = a(t)^2 c^2 + s(t)^2, the map that carries N(a_T mu, r(T)^2) onto N(a mu, r(eps)^2)."""
    T, e = (torch.tensor([v], dtype=F64) for v in (sde.T, eps))

    def r(t):
        return torch.sqrt(sde.mean_coeff(t) ** 2 * c**2 + sde.std(t) ** 2)

    return sde.mean_coeff(e) * mu + r(e) / r(T) * (x_T - sde.mean_coeff(T) * mu)


ORDERS = {"euler": 1, "heun": 2, "dpm-solver-2": 2, "dpmpp-2m": 2, "edm-heun": 2, "dpm-solver-3": 3}


@pytest.mark.parametrize("method", list(ORDERS))
def test_convergence_order_on_a_gaussian(sde, method):
    """Endpoint error against the closed-form solution falls as NFE^-order (32 -> 64 steps)."""
    mu, c = torch.tensor([0.7, -0.7], dtype=F64), 0.4
    g = gaussian(mu, c**2 * torch.eye(2, dtype=F64))
    x_T = sde.prior_sampling((32, 2), torch.Generator().manual_seed(0), dtype=F64)
    # the solver's order on the paper's grid end eps (not sub-VP's default sigma_min)
    end = {"sigma_min": noise_level(sde, sde.sampling_eps)}
    ref = exact_gaussian_flow(sde, x_T, mu, c, grid_end(sde, method, None, end["sigma_min"]))
    err, nfe = [], []
    for steps in (32, 64):
        x, n = ode_sample(g.score_fn(sde), sde, (32, 2), method=method, steps=steps, x_T=x_T, dtype=F64,
                          **end)
        assert n == steps * METHODS[method].nfe_per_step
        err.append((x - ref).abs().max().item())
        nfe.append(n)
    slope = -math.log(err[1] / err[0]) / math.log(nfe[1] / nfe[0])
    assert abs(slope - ORDERS[method]) < 0.35, (slope, err)


def assert_matches_per_mode(x, gmm, mean_tol=0.06, cov_tol=0.05, weight_tol=0.04):
    """Each mode's weight, mean and covariance (modes at x = -2 and +2), not the pooled covariance."""
    x = x.double()
    for k, side in enumerate((x[:, 0] < 0, x[:, 0] > 0)):
        part = x[side]
        w = len(part) / len(x)
        assert abs(w - gmm.w[k].item()) < weight_tol, f"mode {k}: weight {w:.3f} != {gmm.w[k]:.3f}"
        assert torch.allclose(part.mean(0), gmm.mu[k], atol=mean_tol), f"mode {k}: mean {part.mean(0)}"
        cov = torch.cov(part.T)
        assert torch.allclose(cov, gmm.S[k], rtol=0, atol=cov_tol), f"mode {k}: cov {cov}"


# (method, steps) at about 40 NFE, each solver's default schedule. Tolerances: ~3 standard errors of
# 2000 samples (per-mode covariance se ~0.015) plus the discretisation bias measured at 40 NFE
# (<= 0.045 in a mode's mean). At 20 NFE the bias is larger than that: edm-heun and dpm-solver-2
# miss a mode's mean by 0.1-0.3 on VP / sub-VP, dpmpp-2m a covariance entry by 0.06 on sub-VP;
# Heun in t needs 50 steps on VE.
COARSE_ODE = [("dpm-solver-2", 20), ("dpm-solver-3", 13), ("dpmpp-2m", 40), ("edm-heun", 20),
              ("heun", 50), ("euler-sigma", 100)]
@pytest.mark.parametrize(("method", "steps"), COARSE_ODE)
def test_fast_solvers_on_the_mixture_per_mode(sde, method, steps):
    gmm = two_mode_mixture()
    x, nfe = ode_sample(gmm.score_fn(sde), sde, (2000, 2), method=method, steps=steps, denoise=True,
                        generator=torch.Generator().manual_seed(1), dtype=F64)
    assert nfe == steps * METHODS[method].nfe_per_step + 1
    assert_matches_per_mode(x, gmm)


def test_ode_methods_are_all_listed():
    assert set(ORDERS) | {"rk45", "euler-sigma", "heun-sigma"} == set(ODE_METHODS)


def test_x_T_fixes_the_prior_draw(sde):
    """The same x_T gives the same ODE sample whatever generator; a wrong shape is refused."""
    score = two_mode_mixture().score_fn(sde)
    x_T = sde.prior_sampling((8, 2), torch.Generator().manual_seed(3), dtype=F64)
    a, _ = ode_sample(score, sde, (8, 2), method="dpmpp-2m", steps=5, x_T=x_T)
    b, _ = ode_sample(score, sde, (8, 2), method="dpmpp-2m", steps=5, x_T=x_T.clone(),
                      generator=torch.Generator().manual_seed(9))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match=r"x_T has shape \(8, 2\)"):
        pc_sample(score, sde, (4, 2), steps=3, x_T=x_T)


SNR = {"ve": 0.16, "vp": 0.01, "subvp": 0.01}


PC_CASES = [("euler_maruyama", "none"), ("reverse_diffusion", "none"), ("ancestral", "none"),
            ("reverse_diffusion", "langevin")]


@pytest.mark.parametrize(("predictor", "corrector"), PC_CASES)
def test_predictors_on_the_mixture_per_mode(sde, predictor, corrector):
    """100 steps (a tenth of the paper's N), time-uniform grid, final Tweedie step."""
    gmm = two_mode_mixture()
    x, nfe = pc_sample(gmm.score_fn(sde), sde, (2000, 2), steps=100, predictor=predictor,
                       corrector=corrector, snr=SNR[sde.name], generator=torch.Generator().manual_seed(1),
                       dtype=F64)
    assert nfe == 100 * (1 + (corrector != "none")) + 1
    assert_matches_per_mode(x, gmm)
