"""Samplers of the probability-flow ODE (eq. 13), dx = [f - g^2 score / 2] dt, from T to eps.

Every SDE here perturbs data as x(t) = a(t) x(0) + s(t) z. Fixed-step methods step along an
explicit grid (``schedules``):

========================= ============================================ ================= =========
method                    step                                          default schedule  NFE/step
========================= ============================================ ================= =========
``euler`` / ``heun``      Euler / Heun (trapezoidal) in t               time_uniform      1 / 2
``euler-sigma`` / ``heun-sigma``  the same, in sigma = s / a (EDM)      time_uniform      1 / 2
``edm-heun``              Heun in sigma (Karras et al. 2022, Alg. 1)    karras (rho = 7)  2
``dpm-solver-2`` / ``-3`` DPM-Solver-2 / -3 in lambda = log(a / s)      logsnr_uniform    2 / 3
                          (Lu et al. 2022, Alg. 4 and 5, r = 1/2; 1/3, 2/3)
``dpmpp-2m``              DPM-Solver++(2M), multistep, data prediction  logsnr_uniform    1
                          (Lu et al. 2022b, Alg. 2)
``rk45``                  adaptive Dormand-Prince (rtol, atol)          --                adaptive
========================= ============================================ ================= =========
"""

from __future__ import annotations

import torch

from ..sde import SDE
from ..utils import Generator, append_dims
from .common import _check_args, _check_finite, _start, final_tweedie
from .schedules import log_snr, log_snr_inverse, make_grid

DEFAULT_SCHEDULE = {
    "heun": "time_uniform", "euler": "time_uniform", "heun-sigma": "time_uniform",
    "euler-sigma": "time_uniform", "edm-heun": "karras", "dpm-solver-2": "logsnr_uniform",
    "dpm-solver-3": "logsnr_uniform", "dpmpp-2m": "logsnr_uniform",
}
ODE_METHODS = ("rk45", *DEFAULT_SCHEDULE)
NFE_PER_STEP = {"heun": 2, "euler": 1, "heun-sigma": 2, "euler-sigma": 1, "edm-heun": 2,
                "dpm-solver-2": 2, "dpm-solver-3": 3, "dpmpp-2m": 1}


def _fixed_step_ode(drift, x, times, method, clock=None):
    """Euler or Heun (trapezoidal) steps on dx/ds = drift(x, t) along ``times``; returns (x, nfe).

    The independent variable is s = clock(t) (t itself when ``clock`` is None): the grid is given
    in t, the step size is clock(t_{i+1}) - clock(t_i).
    """
    nfe = 0
    B = x.shape[0]
    for t0, t1 in zip(times[:-1], times[1:], strict=True):
        h = t1 - t0 if clock is None else clock(t1) - clock(t0)
        d0 = drift(x, t0.expand(B))
        x_next = x + h * d0
        nfe += 1
        if "heun" in method:
            d1 = drift(x_next, t1.expand(B))
            x_next = x + h * 0.5 * (d0 + d1)
            nfe += 1
        x = x_next
    return x, nfe


def _sigma_step_ode(score_fn, sde: SDE, x, times, method):
    """Euler / Heun on the probability-flow ODE in noise-level coordinates (Karras et al. 2022).

    x_hat = x / a(t) is the data plus noise of level sigma = s(t) / a(t), and eq. 13 becomes
    dx_hat / dsigma = (x_hat - D) / sigma = -s(t) score(x, t), with D the Tweedie estimate of x(0)
    (EDM eq. 4 with s(t) = 1). Along sigma the solution is nearly straight, so a step is far more
    accurate than one of the same size in t; for VE (a = 1) the x coordinates are unchanged.
    """
    def a(t):
        return append_dims(sde.mean_coeff(t), x.ndim)

    def drift(x_hat, t):
        return -append_dims(sde.std(t), x.ndim) * score_fn(a(t) * x_hat, t)

    def sigma(t):
        return sde.std(t) / sde.mean_coeff(t)

    first, last = (times[i].expand(x.shape[0]) for i in (0, -1))
    x_hat, nfe = _fixed_step_ode(drift, x / a(first), times, method, clock=sigma)
    return a(last) * x_hat, nfe


class _Coefficients:
    """a(t), s(t), lambda(t) on a grid time, broadcast against x; the noise and data predictions
    eps_theta = -s score and x0_theta = (x + s^2 score) / a (DPM-Solver's parametrisations)."""

    def __init__(self, score_fn, sde, ndim):
        self.score_fn, self.sde, self.ndim = score_fn, sde, ndim

    def at(self, t):
        sde, n = self.sde, self.ndim
        return (append_dims(sde.mean_coeff(t), n), append_dims(sde.std(t), n),
                append_dims(log_snr(sde, t), n))

    def noise(self, x, t):
        return -append_dims(self.sde.std(t), self.ndim) * self.score_fn(x, t)

    def data(self, x, t):
        a, s, _ = self.at(t)
        return (x + s**2 * self.score_fn(x, t)) / a


def _dpm_solver(score_fn, sde: SDE, x, times, order: int):
    """Singlestep DPM-Solver-2 / -3 with noise prediction (Lu et al. 2022, Algorithms 4 and 5).

    With h = lambda_t - lambda_s and phi_1 = e^h - 1, the exact solution of the semi-linear ODE
    x_t = (a_t / a_s) x_s - s_t int e^{h'} eps_theta dh' (eq. 3.4) is approximated by Taylor terms
    of eps_theta in lambda at intermediate points s_1 = t(lambda_s + r_1 h) (, s_2).
    """
    c, B = _Coefficients(score_fn, sde, x.ndim), x.shape[0]
    nfe = 0
    for t0, t1 in zip(times[:-1], times[1:], strict=True):
        s, t = t0.expand(B), t1.expand(B)
        a_s, s_s, lam_s = c.at(s)
        a_t, s_t, lam_t = c.at(t)
        h = lam_t - lam_s
        eps_s = c.noise(x, s)
        if order == 2:
            r1 = 0.5
            s1 = log_snr_inverse(sde, lam_s.flatten() + r1 * h.flatten())
            a_1, s_1, _ = c.at(s1)
            u = (a_1 / a_s) * x - s_1 * torch.expm1(r1 * h) * eps_s
            d = c.noise(u, s1) - eps_s
            x = (a_t / a_s) * x - s_t * torch.expm1(h) * eps_s - s_t / (2 * r1) * torch.expm1(h) * d
        else:
            r1, r2 = 1.0 / 3.0, 2.0 / 3.0
            s1 = log_snr_inverse(sde, lam_s.flatten() + r1 * h.flatten())
            s2 = log_snr_inverse(sde, lam_s.flatten() + r2 * h.flatten())
            a_1, s_1, _ = c.at(s1)
            a_2, s_2, _ = c.at(s2)
            phi_11, phi_12, phi_1 = torch.expm1(r1 * h), torch.expm1(r2 * h), torch.expm1(h)
            phi_22 = torch.expm1(r2 * h) / (r2 * h) - 1.0
            phi_2 = phi_1 / h - 1.0
            u1 = (a_1 / a_s) * x - s_1 * phi_11 * eps_s
            d1 = c.noise(u1, s1) - eps_s
            u2 = (a_2 / a_s) * x - s_2 * phi_12 * eps_s - (r2 / r1) * s_2 * phi_22 * d1
            d2 = c.noise(u2, s2) - eps_s
            x = (a_t / a_s) * x - s_t * phi_1 * eps_s - (1.0 / r2) * s_t * phi_2 * d2
        nfe += order
    return x, nfe


def _dpmpp_2m(score_fn, sde: SDE, x, times):
    """Multistep DPM-Solver++(2M) with data prediction (Lu et al. 2022b, Algorithm 2).

    x_t = (s_t / s_s) x_s - a_t (e^{-h} - 1) D, D = (1 + 1/(2r)) x0_s - 1/(2r) x0_prev with
    r = h_prev / h; the first step is first order (D = x0_s). One NFE per step.
    """
    c, B = _Coefficients(score_fn, sde, x.ndim), x.shape[0]
    prev, h_prev = None, None
    for t0, t1 in zip(times[:-1], times[1:], strict=True):
        s, t = t0.expand(B), t1.expand(B)
        _, s_s, lam_s = c.at(s)
        a_t, s_t, lam_t = c.at(t)
        h = lam_t - lam_s
        x0 = c.data(x, s)
        if prev is None:
            d = x0
        else:
            half_inv_r = 0.5 * h / h_prev  # 1 / (2r)
            d = (1 + half_inv_r) * x0 - half_inv_r * prev
        x = (s_t / s_s) * x - a_t * torch.expm1(-h) * d
        prev, h_prev = x0, h
    return x, len(times) - 1


def _adaptive_ode(drift, x, t0, t1, rtol, atol):
    """Dormand-Prince RK45 (torchdiffeq ``dopri5``) on the tensor's own device; returns (x, nfe)."""
    count = [0]
    B = x.shape[0]

    def func(t, y):
        count[0] += 1
        return drift(y, t.expand(B))

    return dopri5(func, x, t0, t1, rtol, atol, "ode_sample")[-1], count[0]


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


def ode_sample(
    score_fn,
    sde: SDE,
    shape,
    method: str = "rk45",
    steps: int | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    eps: float | None = None,
    denoise: bool = False,
    generator: Generator = None,
    device=None,
    dtype=None,
    schedule=None,
    x_T: torch.Tensor | None = None,
):
    """Sample by integrating the probability-flow ODE (eq. 13) from T to eps.

    ``method``: ``rk45`` (adaptive, rtol / atol) or a fixed-step method of the module table with
    ``steps`` steps along ``schedule`` (a name of ``SCHEDULES``, a schedule function or an explicit
    grid; None picks the method's default). With ``denoise`` a final Tweedie step maps x(eps) to
    E[x(0) | x(eps)] (one more NFE). ``x_T`` is a given prior draw. Returns ``(samples, nfe)``.
    """
    x, nfe = ode_trajectory(score_fn, sde, shape, method, steps, rtol, atol, eps, generator, device,
                            dtype, schedule=schedule, x_T=x_T)
    if denoise:
        last = schedule[-1].item() if isinstance(schedule, torch.Tensor) else eps
        x, nfe = final_tweedie(score_fn, sde, x, last), nfe + 1
    return _check_finite(x, "ode_sample"), nfe


def ode_trajectory(
    score_fn,
    sde: SDE,
    shape,
    method: str = "rk45",
    steps: int | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    eps: float | None = None,
    generator: Generator = None,
    device=None,
    dtype=None,
    schedule=None,
    x_T: torch.Tensor | None = None,
):
    """x(eps) from the probability-flow ODE (eq. 13) started at x_T or a prior draw; ``(x, nfe)``."""
    if method not in ODE_METHODS:
        raise ValueError(f"unknown ODE method {method!r}; choose one of {', '.join(ODE_METHODS)}")
    eps = sde.sampling_eps if eps is None else eps
    steps = sde.N if steps is None else int(steps)
    _check_args(sde, steps, eps)
    x = _start(sde, shape, generator, device, dtype, x_T)
    if method == "rk45":
        rsde = sde.reverse(score_fn, probability_flow=True)
        end = schedule[-1].item() if isinstance(schedule, torch.Tensor) else eps
        return _adaptive_ode(lambda y, t: rsde.sde(y, t)[0], x, sde.T, end, rtol, atol)
    times = make_grid(sde, schedule or DEFAULT_SCHEDULE[method], steps, eps, x.device, x.dtype)
    if method in ("dpm-solver-2", "dpm-solver-3"):
        return _dpm_solver(score_fn, sde, x, times, int(method[-1]))
    if method == "dpmpp-2m":
        return _dpmpp_2m(score_fn, sde, x, times)
    if method.endswith("-sigma") or method == "edm-heun":
        return _sigma_step_ode(score_fn, sde, x, times, method)
    rsde = sde.reverse(score_fn, probability_flow=True)
    return _fixed_step_ode(lambda y, t: rsde.sde(y, t)[0], x, times, method)
