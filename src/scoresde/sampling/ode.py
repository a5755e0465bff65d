"""Step functions of the probability-flow ODE (eq. 13), dx = [f - g^2 score / 2] dt, from T to eps.

Every SDE here perturbs data as x(t) = a(t) x(0) + s(t) z. Each function steps along an explicit
decreasing grid ``times`` (``schedules``) with the shape ``sample_<method>(score_fn, sde, x, times,
generator=None) -> (x, x)`` (deterministic: the last step's mean is x itself). The table of
methods, their default schedules and NFE per step is ``methods.METHODS``:
Euler / Heun in t, the same in sigma = s / a (EDM), DPM-Solver-2 / -3 (Lu et al. 2022, Alg. 4
and 5), DPM-Solver++(2M) (Lu et al. 2022b, Alg. 2) and adaptive RK45.
"""

from __future__ import annotations

import math

import torch

from .. import checks
from ..sde import SDE
from .schedules import log_snr, log_snr_inverse


def _pf_drift(score_fn, sde: SDE):
    """The probability-flow drift f - g^2 score / 2 of eq. 13."""
    rsde = sde.reverse(score_fn, probability_flow=True)
    return lambda y, t: rsde.sde(y, t)[0]


def _euler_heun_t(score_fn, sde: SDE, x, times, heun: bool):
    """Euler or Heun (trapezoidal) steps in t on dx/dt = f - g^2 score / 2 along ``times``."""
    drift, B = _pf_drift(score_fn, sde), x.shape[0]
    for t0, t1 in zip(times[:-1], times[1:], strict=True):
        h = t1 - t0
        d0 = drift(x, t0.expand(B))
        x_next = x + h * d0
        if heun:
            x_next = x + h * 0.5 * (d0 + drift(x_next, t1.expand(B)))
        x = x_next
    return x, x


def sample_euler(score_fn, sde: SDE, x, times, generator=None):
    """Euler steps in t on the probability-flow ODE (eq. 13); 1 NFE per step."""
    checks.start(sde, x, times, generator)
    return _euler_heun_t(score_fn, sde, x, times, heun=False)


def sample_heun(score_fn, sde: SDE, x, times, generator=None):
    """Heun (trapezoidal) steps in t on the probability-flow ODE (eq. 13); 2 NFE per step."""
    checks.start(sde, x, times, generator)
    return _euler_heun_t(score_fn, sde, x, times, heun=True)


def _sigma_steps(score_fn, sde: SDE, x, times, heun: bool):
    """Euler / Heun on the probability-flow ODE in noise-level coordinates (Karras et al. 2022).

    x_hat = x / a(t) is the data plus noise of level sigma = s(t) / a(t), and eq. 13 becomes
    dx_hat / dsigma = (x_hat - D) / sigma = -s(t) score(x, t), with D the Tweedie estimate of x(0)
    (EDM eq. 4 with s(t) = 1). Along sigma the solution is nearly straight, so a step is far more
    accurate than one of the same size in t; for VE (a = 1) the x coordinates are unchanged.
    """
    B = x.shape[0]
    a, s, _ = grid_coefficients(sde, times)
    sigma = [si / ai for si, ai in zip(s, a, strict=True)]

    def drift(x_hat, i):
        return -s[i] * score_fn(x_hat if a[i] == 1.0 else a[i] * x_hat, times[i].expand(B))

    x_hat = x if a[0] == 1.0 else x / a[0]
    for i in range(len(times) - 1):
        h = sigma[i + 1] - sigma[i]
        d0 = drift(x_hat, i)
        x_next = x_hat + h * d0
        if heun:
            x_next = x_hat + (0.5 * h) * (d0 + drift(x_next, i + 1))
        x_hat = x_next
    x = x_hat if a[-1] == 1.0 else a[-1] * x_hat
    return x, x


def sample_euler_sigma(score_fn, sde: SDE, x, times, generator=None):
    """Euler steps in the noise level sigma = s / a (EDM's parametrisation); 1 NFE per step."""
    checks.start(sde, x, times, generator)
    return _sigma_steps(score_fn, sde, x, times, heun=False)


def sample_heun_sigma(score_fn, sde: SDE, x, times, generator=None):
    """Heun steps in sigma (Karras et al. 2022, Algorithm 1 on the given grid); 2 NFE per step."""
    checks.start(sde, x, times, generator)
    return _sigma_steps(score_fn, sde, x, times, heun=True)


def grid_coefficients(sde: SDE, times: torch.Tensor) -> tuple[list, list, list]:
    """a(t_i), s(t_i), lambda(t_i) of every grid time as Python floats (float64), computed once:
    the solver loops then do no per-step tensor bookkeeping beyond the update itself."""
    t = times.detach().to(torch.float64)
    return sde.mean_coeff(t).tolist(), sde.std(t).tolist(), log_snr(sde, t).tolist()


def _stage_times(sde: SDE, lam: list, r: float, like: torch.Tensor):
    """t(lambda_s + r h) for every step at once, with its a and s (DPM-Solver's intermediate points)."""
    lam_t = torch.tensor(lam, dtype=torch.float64)
    t = log_snr_inverse(sde, lam_t[:-1] + r * lam_t.diff())
    return t.to(like.dtype).to(like.device), sde.mean_coeff(t).tolist(), sde.std(t).tolist()


def _dpm_solver(score_fn, sde: SDE, x, times, order: int):
    """Singlestep DPM-Solver-2 / -3 with noise prediction eps_theta = -s score (Lu et al. 2022,
    Algorithms 4 and 5, r_1 = 1/2; r_1 = 1/3, r_2 = 2/3).

    With h = lambda_t - lambda_s and phi_1 = e^h - 1, the exact solution of the semi-linear ODE
    x_t = (a_t / a_s) x_s - s_t int e^{h'} eps_theta dh' (eq. 3.4) is approximated by Taylor terms
    of eps_theta in lambda at intermediate points s_k = t(lambda_s + r_k h).
    """
    B = x.shape[0]
    a, s, lam = grid_coefficients(sde, times)
    r1, r2 = (0.5, None) if order == 2 else (1.0 / 3.0, 2.0 / 3.0)
    t1, a1, s1 = _stage_times(sde, lam, r1, times)
    if order == 3:
        t2, a2, s2 = _stage_times(sde, lam, r2, times)

    def eps_theta(y, t, std):
        return -std * score_fn(y, t.expand(B))

    for i in range(len(times) - 1):
        h = lam[i + 1] - lam[i]
        eps_s = eps_theta(x, times[i], s[i])
        phi_1 = math.expm1(h)
        u1 = (a1[i] / a[i]) * x - s1[i] * math.expm1(r1 * h) * eps_s
        d1 = eps_theta(u1, t1[i], s1[i]) - eps_s
        if order == 2:
            x = (a[i + 1] / a[i]) * x - s[i + 1] * phi_1 * eps_s - s[i + 1] / (2 * r1) * phi_1 * d1
            continue
        phi_22, phi_2 = math.expm1(r2 * h) / (r2 * h) - 1.0, phi_1 / h - 1.0
        u2 = (a2[i] / a[i]) * x - s2[i] * math.expm1(r2 * h) * eps_s - (r2 / r1) * s2[i] * phi_22 * d1
        d2 = eps_theta(u2, t2[i], s2[i]) - eps_s
        x = (a[i + 1] / a[i]) * x - s[i + 1] * phi_1 * eps_s - (1.0 / r2) * s[i + 1] * phi_2 * d2
    return x, x


def sample_dpm_solver_2(score_fn, sde: SDE, x, times, generator=None):
    """DPM-Solver-2 (Lu et al. 2022, Algorithm 4, r_1 = 1/2); 2 NFE per step."""
    checks.start(sde, x, times, generator)
    return _dpm_solver(score_fn, sde, x, times, 2)


def sample_dpm_solver_3(score_fn, sde: SDE, x, times, generator=None):
    """DPM-Solver-3 (Lu et al. 2022, Algorithm 5, r_1 = 1/3, r_2 = 2/3); 3 NFE per step."""
    checks.start(sde, x, times, generator)
    return _dpm_solver(score_fn, sde, x, times, 3)


def sample_dpmpp_2m(score_fn, sde: SDE, x, times, generator=None):
    """Multistep DPM-Solver++(2M) with data prediction x0_theta = (x + s^2 score) / a (Lu et al.
    2022b, Algorithm 2).

    x_t = (s_t / s_s) x_s - a_t (e^{-h} - 1) D, D = (1 + 1/(2r)) x0_s - 1/(2r) x0_prev with
    r = h_prev / h; the first step is first order (D = x0_s). One NFE per step.
    """
    checks.start(sde, x, times, generator)
    B = x.shape[0]
    a, s, lam = grid_coefficients(sde, times)
    prev = h_prev = None
    for i in range(len(times) - 1):
        h = lam[i + 1] - lam[i]
        x0 = (x + s[i] ** 2 * score_fn(x, times[i].expand(B))) / a[i]
        if prev is None:
            d = x0
        else:
            half_inv_r = 0.5 * h / h_prev  # 1 / (2r)
            d = (1 + half_inv_r) * x0 - half_inv_r * prev
        x = (s[i + 1] / s[i]) * x - a[i + 1] * math.expm1(-h) * d
        prev, h_prev = x0, h
    return x, x


def sample_rk45(score_fn, sde: SDE, x, times, generator=None, rtol: float = 1e-5, atol: float = 1e-5):
    """Adaptive Dormand-Prince RK45 (torchdiffeq ``dopri5``) from ``times[0]`` to ``times[-1]`` on the
    tensor's own device (no host round trips); the step sizes are shared by the batch."""
    checks.start(sde, x, times, generator)
    drift, B = _pf_drift(score_fn, sde), x.shape[0]
    rtol = checks.number("rtol", rtol, 0.0, open_lo=True)
    atol = checks.number("atol", atol, 0.0, open_lo=True)
    x = dopri5(lambda t, y: drift(y, t.expand(B)), x, times[0].item(), times[-1].item(), rtol, atol,
               "ode_sample")[-1]
    return x, x


def dopri5(func, y0, t0, t1, rtol, atol, what):
    """torchdiffeq's dopri5 from t0 to t1; returns the solution at both ends.

    ``step_t`` makes the last step land on ``t1``: no stage evaluates the score outside [eps, T].
    A step size that underflows (the drift became NaN / Inf or exploded) is a FloatingPointError.
    """
    from torchdiffeq import odeint

    ref = y0[0] if isinstance(y0, tuple) else y0
    span = torch.tensor([t0, t1], device=ref.device, dtype=ref.dtype)
    try:
        return odeint(func, y0, span, rtol=rtol, atol=atol, method="dopri5", options={"step_t": span[1:]})
    except AssertionError as err:
        if "underflow in dt" not in str(err):
            raise
        raise FloatingPointError(
            f"{what}: the adaptive ODE step size underflowed; the score network produced non-finite "
            "values (NaN/Inf) or the drift exploded"
        ) from None


