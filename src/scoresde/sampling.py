"""Samplers for the reverse-time SDE (eq. 6) and the probability-flow ODE (eq. 13).

Predictor-corrector sampling is Algorithm 1 of Song et al. (2021) with the predictors and correctors of
Appendix E-G. Every predictor and corrector is one function with one calling convention::

    predictor(score_fn, sde, x, t, dt, generator) -> (x, x_mean)
    corrector(score_fn, sde, x, t, dt, snr, generator) -> (x, x_mean)

where ``t`` has shape (B,), ``dt > 0`` is the step towards t = 0 and ``x_mean`` is the update without
its noise. A step that reaches below t = 0 lands on the data, so the mean of the final step is the
one-step Tweedie denoiser E[x(0) | x(eps)] for ``reverse_diffusion`` and ``ancestral``.
"""

from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from .sde import SDE
from .utils import Generator, append_dims, batch_sum, generator_device, randn

# --- predictors ---------------------------------------------------------------------------------


def euler_maruyama(score_fn, sde: SDE, x, t, dt, generator=None):
    """Euler-Maruyama on the reverse SDE: x <- x - [f - g^2 s] dt + g sqrt(dt) z."""
    drift, g = sde.reverse(score_fn).sde(x, t)
    x_mean = x - drift * dt
    z = randn(x.shape, generator, x.device, x.dtype)
    return x_mean + append_dims(g, x.ndim) * math.sqrt(dt) * z, x_mean


def reverse_diffusion(score_fn, sde: SDE, x, t, dt, generator=None):
    """Reverse diffusion (eq. 46): x_{i-1} = x_i - f_i + G_i^2 s + G_i z."""
    f_rev, G = sde.reverse(score_fn).discretize(x, t, dt)
    x_mean = x - f_rev
    z = randn(x.shape, generator, x.device, x.dtype)
    return x_mean + append_dims(G, x.ndim) * z, x_mean


def ancestral(score_fn, sde: SDE, x, t, dt, generator=None):
    """Ancestral sampling: a draw from q(x_{t-dt} | x_t, x0_hat), x0_hat the Tweedie estimate.

    With the transition x_t = m x_{t-dt} + sqrt(v) z the posterior mean is (x + v s) / m and its
    variance v s(t-dt)^2 / s(t)^2. For VE this is the SMLD ancestral sampler (eq. 47); for VP it is
    DDPM's sampler with the posterior variance beta~; it also holds for sub-VP, where the official
    code crashes.
    """
    m, v = sde.transition(t, dt)
    score = score_fn(x, t)
    var_t = sde.std(t) ** 2
    var_prev = torch.clamp((var_t - v) / m**2, min=0.0)
    x_mean = (x + append_dims(v, x.ndim) * score) / append_dims(m, x.ndim)
    noise_std = torch.sqrt(v * var_prev / var_t)
    z = randn(x.shape, generator, x.device, x.dtype)
    return x_mean + append_dims(noise_std, x.ndim) * z, x_mean


def no_predictor(score_fn, sde, x, t, dt, generator=None):
    return x, x


PREDICTORS = {
    "euler_maruyama": euler_maruyama,
    "reverse_diffusion": reverse_diffusion,
    "ancestral": ancestral,
    "none": no_predictor,
}

# --- correctors ---------------------------------------------------------------------------------


def langevin(score_fn, sde: SDE, x, t, dt, snr, generator=None):
    """One Langevin MCMC step (Algorithms 4 and 5): eps_i = 2 alpha_i (r ||z|| / ||s||)^2.

    As in the paper's code the norms are averaged over the batch: per-sample norms are heavy-tailed
    in low dimension (||s|| -> 0 at a mode gives an unbounded step). The step size, and only it,
    therefore depends on the batch.
    """
    score = score_fn(x, t)
    z = randn(x.shape, generator, x.device, x.dtype)
    ratio = snr * batch_sum(z**2).sqrt().mean() / batch_sum(score**2).sqrt().mean()
    step = append_dims(2.0 * sde.langevin_alpha(t, dt) * ratio**2, x.ndim)
    x_mean = x + step * score
    return x_mean + torch.sqrt(2.0 * step) * z, x_mean


def ald(score_fn, sde: SDE, x, t, dt, snr, generator=None):
    """Annealed Langevin dynamics of NCSN (Song & Ermon 2019): eps_i = 2 alpha_i (r s(t))^2."""
    score = score_fn(x, t)
    z = randn(x.shape, generator, x.device, x.dtype)
    step = append_dims(2.0 * sde.langevin_alpha(t, dt) * (snr * sde.std(t)) ** 2, x.ndim)
    x_mean = x + step * score
    return x_mean + torch.sqrt(2.0 * step) * z, x_mean


def no_corrector(score_fn, sde, x, t, dt, snr, generator=None):
    return x, x


CORRECTORS = {"langevin": langevin, "ald": ald, "none": no_corrector}

ODE_METHODS = ("rk45", "heun", "euler", "heun-sigma", "euler-sigma")


def _lookup(table: dict, name: str, kind: str):
    if name not in table:
        raise ValueError(f"unknown {kind} {name!r}; choose one of {', '.join(table)}")
    return table[name]


def _check_args(sde: SDE, steps: int, eps: float):
    if int(steps) < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not 0 < eps < sde.T:
        raise ValueError(f"eps must lie in (0, T={sde.T}), got {eps}")


def _check_finite(x: torch.Tensor, what: str) -> torch.Tensor:
    if not torch.isfinite(x).all():
        raise FloatingPointError(
            f"{what} produced non-finite values (NaN/Inf); the score network or the step size diverged"
        )
    return x


def _start(sde, shape, generator, device, dtype):
    device = device if device is not None else generator_device(generator)
    return sde.prior_sampling(shape, generator, device=device, dtype=dtype)


def time_grid(sde: SDE, steps: int, eps: float, device=None, dtype=None) -> torch.Tensor:
    """Uniform times T = t_0 > ... > t_{steps-1} = eps."""
    return torch.linspace(sde.T, eps, steps, device=device, dtype=dtype)


def pc_sample(
    score_fn,
    sde: SDE,
    shape,
    steps: int | None = None,
    predictor: str = "reverse_diffusion",
    corrector: str = "langevin",
    snr: float = 0.16,
    corrector_steps: int = 1,
    eps: float | None = None,
    denoise: bool = True,
    generator: Generator = None,
    device=None,
    dtype=None,
    progress: bool = False,
):
    """Predictor-corrector sampling (Algorithm 1): at each t_i, corrector steps, then one predictor step.

    ``steps`` defaults to the SDE's N and may be any positive integer. With ``denoise`` the result is
    the last update's mean (one Tweedie step, no noise). Returns ``(samples, nfe)``.
    """
    x, x_mean, nfe = pc_trajectory(score_fn, sde, shape, steps, predictor, corrector, snr,
                                   corrector_steps, eps, generator, device, dtype, progress)
    return _check_finite(x_mean if denoise else x, "pc_sample"), nfe


def pc_trajectory(
    score_fn,
    sde: SDE,
    shape,
    steps: int | None = None,
    predictor: str = "reverse_diffusion",
    corrector: str = "langevin",
    snr: float = 0.16,
    corrector_steps: int = 1,
    eps: float | None = None,
    generator: Generator = None,
    device=None,
    dtype=None,
    progress: bool = False,
):
    """Algorithm 1's loop; returns ``(x, x_mean, nfe)``: the last sample and the last update's mean.

    ``pc_sample`` returns one of the two; both come from the same trajectory (the Tweedie on / off
    pair of a sweep costs one run).
    """
    predict = _lookup(PREDICTORS, predictor, "predictor")
    correct = _lookup(CORRECTORS, corrector, "corrector")
    steps = sde.N if steps is None else int(steps)
    eps = sde.sampling_eps if eps is None else eps
    _check_args(sde, steps, eps)
    if snr < 0:
        raise ValueError(f"snr must be >= 0, got {snr}")
    if corrector_steps < 0:
        raise ValueError(f"corrector_steps must be >= 0, got {corrector_steps}")
    x = _start(sde, shape, generator, device, dtype)
    times = time_grid(sde, steps, eps, x.device, x.dtype)
    dt = (sde.T - eps) / (steps - 1) if steps > 1 else sde.T
    x_mean = x
    for t_i in tqdm(times, disable=not progress, desc=f"{predictor}+{corrector}", leave=False):
        t = t_i.expand(shape[0])
        for _ in range(corrector_steps):
            x, x_mean = correct(score_fn, sde, x, t, dt, snr, generator)
        x, x_mean = predict(score_fn, sde, x, t, dt, generator)
    nfe = steps * (int(predictor != "none") + corrector_steps * int(corrector != "none"))
    return x, x_mean, nfe


def tweedie_denoise(score_fn, sde: SDE, x, t):
    """E[x(0) | x(t)] = (x + s(t)^2 score) / a(t) (Tweedie's formula for a Gaussian kernel)."""
    std = append_dims(sde.std(t), x.ndim)
    return (x + std**2 * score_fn(x, t)) / append_dims(sde.mean_coeff(t), x.ndim)


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
        if method.startswith("heun"):
            d1 = drift(x_next, t1.expand(B))
            x_next = x + h * 0.5 * (d0 + d1)
            nfe += 1
        x = x_next
    return x, nfe


def _sigma_step_ode(score_fn, sde: SDE, x, times, method):
    """Euler / Heun on the probability-flow ODE in noise-level coordinates (Karras et al. 2022).

    Every SDE here perturbs data as x(t) = a(t) x(0) + s(t) z, so x_hat = x / a(t) is the data plus
    noise of level sigma = s(t) / a(t), and eq. 13 becomes dx_hat / dsigma = (x_hat - D) / sigma
    = -s(t) score(x, t), with D the Tweedie estimate of x(0). Along this variable the solution is
    nearly straight, so a step is far more accurate than one of the same size in t. Same t grid,
    same NFE as ``heun`` / ``euler``; for VE (a = 1) the x coordinates are unchanged.
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
):
    """Sample by integrating the probability-flow ODE (eq. 13) from T to eps.

    ``method``: ``rk45`` (adaptive, rtol / atol), or ``heun`` / ``euler`` with ``steps`` uniform
    steps in t, or ``heun-sigma`` / ``euler-sigma``: the same t grid, stepped in the noise level
    sigma = s(t) / a(t) (EDM's parametrisation, more accurate per step for VE). With ``denoise``
    a final Tweedie step maps x(eps) to E[x(0) | x(eps)]. Returns ``(samples, nfe)``.
    """
    x, nfe = ode_trajectory(score_fn, sde, shape, method, steps, rtol, atol, eps, generator, device,
                            dtype)
    if denoise:
        x, nfe = final_tweedie(score_fn, sde, x, eps), nfe + 1
    return _check_finite(x, "ode_sample"), nfe


def final_tweedie(score_fn, sde: SDE, x, eps: float | None = None):
    """The final denoising of ``ode_sample``: E[x(0) | x(eps)] by Tweedie's formula (one NFE)."""
    eps = sde.sampling_eps if eps is None else eps
    return tweedie_denoise(score_fn, sde, x, torch.full((x.shape[0],), eps, device=x.device, dtype=x.dtype))


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
):
    """x(eps) from the probability-flow ODE (eq. 13) started at a prior draw; returns ``(x, nfe)``."""
    if method not in ODE_METHODS:
        raise ValueError(f"unknown ODE method {method!r}; choose one of {', '.join(ODE_METHODS)}")
    eps = sde.sampling_eps if eps is None else eps
    steps = sde.N if steps is None else int(steps)
    _check_args(sde, steps, eps)
    x = _start(sde, shape, generator, device, dtype)
    rsde = sde.reverse(score_fn, probability_flow=True)

    def drift(y, t):
        return rsde.sde(y, t)[0]

    if method == "rk45":
        return _adaptive_ode(drift, x, sde.T, eps, rtol, atol)
    times = torch.linspace(sde.T, eps, steps + 1, device=x.device, dtype=x.dtype)
    if method.endswith("-sigma"):
        return _sigma_step_ode(score_fn, sde, x, times, method)
    return _fixed_step_ode(drift, x, times, method)
