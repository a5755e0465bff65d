"""Time grids for every sampler: a schedule returns T = t_0 > t_1 > ... > t_steps = eps in t.

Schedules are separate from solvers (k-diffusion, EDM): a solver steps between consecutive grid
times and never evaluates the score outside [eps, T]. Every SDE here perturbs data as
x(t) = a(t) x(0) + s(t) z, so its half log signal-to-noise ratio lambda(t) = log(a(t) / s(t))
(Lu et al. 2022, DPM-Solver, eq. 3.2) and the EDM noise level sigma(t) = s(t) / a(t) = exp(-lambda)
are strictly decreasing in t and have closed-form inverses (``log_snr``, ``log_snr_inverse``):

- VE: a = 1, s = sigma_min (sigma_max / sigma_min)^t, lambda = -log s,
  t = (-lambda - log sigma_min) / log(sigma_max / sigma_min).
- VP: log a = L(t) = -t^2 (beta_max - beta_min) / 4 - t beta_min / 2, s = sqrt(1 - a^2),
  lambda = L - log(1 - e^{2L}) / 2; inverse: log a = -softplus(-2 lambda) / 2, then t is the
  root of the quadratic L(t) = log a.
- sub-VP: s = 1 - a^2, lambda = L - log(1 - e^{2L}); inverse: a solves e^lambda a^2 + a - e^lambda = 0,
  a = 2 e^lambda / (1 + sqrt(1 + 4 e^{2 lambda})), then t from L(t) = log a as for VP.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .. import checks
from ..sde import SDE, VESDE, VPSDE, SubVPSDE


def log_snr(sde: SDE, t: torch.Tensor) -> torch.Tensor:
    """lambda(t) = log(a(t) / s(t)), the half log-SNR of the perturbation kernel."""
    if isinstance(sde, VESDE):
        return -torch.log(sde.sigma(t))
    if isinstance(sde, VPSDE):  # VP and sub-VP
        L = sde.log_mean_coeff(t)
        log_one_minus_a2 = torch.log(-torch.expm1(2.0 * L))
        return L - (log_one_minus_a2 if isinstance(sde, SubVPSDE) else 0.5 * log_one_minus_a2)
    raise TypeError(f"no closed-form log-SNR for {type(sde).__name__}; use VESDE, VPSDE or SubVPSDE")


def _t_from_log_mean_coeff(sde: VPSDE, L: torch.Tensor) -> torch.Tensor:
    """The root t >= 0 of (beta_max - beta_min) t^2 / 4 + beta_min t / 2 + L = 0 (L = log a <= 0),
    written -4L / (beta_min + sqrt(beta_min^2 - 4 (beta_max - beta_min) L)) to avoid cancellation."""
    d = sde.beta_max - sde.beta_min
    return -4.0 * L / (sde.beta_min + torch.sqrt(sde.beta_min**2 - 4.0 * d * L))


def log_snr_inverse(sde: SDE, lam: torch.Tensor) -> torch.Tensor:
    """t(lambda), the inverse of :func:`log_snr` in closed form (module docstring)."""
    if isinstance(sde, VESDE):
        return (-lam - math.log(sde.sigma_min)) / sde.log_ratio
    if isinstance(sde, SubVPSDE):
        log_a = math.log(2.0) + lam - torch.log1p(torch.sqrt(1.0 + 4.0 * torch.exp(2.0 * lam)))
        return _t_from_log_mean_coeff(sde, log_a)
    if isinstance(sde, VPSDE):
        return _t_from_log_mean_coeff(sde, -0.5 * F.softplus(-2.0 * lam))
    raise TypeError(f"no closed-form log-SNR for {type(sde).__name__}; use VESDE, VPSDE or SubVPSDE")


def _check(sde: SDE, steps: int, eps: float):
    if int(steps) < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not 0 < eps < sde.T:
        raise ValueError(f"eps must lie in (0, T={sde.T}), got {eps}")


def _ends(sde, eps, device, dtype):
    return torch.tensor([sde.T, eps], device=device, dtype=dtype or torch.get_default_dtype())


def _pin(sde, grid, eps):
    """Pin both ends exactly (the inverse maps can be off by an ulp)."""
    grid[0], grid[-1] = sde.T, eps
    return grid


def time_uniform(sde: SDE, steps: int, eps: float, device=None, dtype=None) -> torch.Tensor:
    """Uniform in t: t_i = T - i (T - eps) / steps (Song et al. 2021)."""
    _check(sde, steps, eps)
    return torch.linspace(sde.T, eps, int(steps) + 1, device=device, dtype=dtype)


def logsnr_uniform(sde: SDE, steps: int, eps: float, device=None, dtype=None) -> torch.Tensor:
    """Uniform in lambda = log(a / s) (DPM-Solver's default for high-resolution data)."""
    _check(sde, steps, eps)
    ends = log_snr(sde, _ends(sde, eps, device, dtype).double())
    lam = torch.linspace(ends[0].item(), ends[1].item(), int(steps) + 1, dtype=torch.float64)
    grid = log_snr_inverse(sde, lam)
    return _pin(sde, grid, eps).to(device=device, dtype=dtype or torch.get_default_dtype())


def karras(sde: SDE, steps: int, eps: float, rho: float = 7.0, device=None, dtype=None) -> torch.Tensor:
    """EDM's grid (Karras et al. 2022, eq. 5) in the noise level sigma = s / a = e^{-lambda}:
    sigma_i = (sigma_max^(1/rho) + i / steps (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho,
    with sigma_max = sigma(T), sigma_min = sigma(eps), mapped back to t."""
    _check(sde, steps, eps)
    if rho <= 0:
        raise ValueError(f"karras: rho must be > 0, got {rho}")
    ends = (-log_snr(sde, _ends(sde, eps, device, dtype).double())).exp() ** (1.0 / rho)
    ramp = torch.linspace(0.0, 1.0, int(steps) + 1, dtype=torch.float64)
    sigma = (ends[0] + ramp * (ends[1] - ends[0])) ** rho
    grid = log_snr_inverse(sde, -torch.log(sigma))
    return _pin(sde, grid, eps).to(device=device, dtype=dtype or torch.get_default_dtype())


SCHEDULES = {"time_uniform": time_uniform, "logsnr_uniform": logsnr_uniform, "karras": karras}


def get_schedule(name: str):
    """A schedule function by name (``time_uniform``, ``logsnr_uniform``, ``karras``)."""
    return SCHEDULES[checks.choice("schedule", name, SCHEDULES, "schedule")]


def check_schedule(schedule) -> None:
    """A schedule argument: a name of ``SCHEDULES``, a schedule function, or an explicit grid
    (a 1-D strictly decreasing tensor of finite times > 0)."""
    if isinstance(schedule, torch.Tensor):
        checks.times("schedule", schedule)
    elif isinstance(schedule, str) or not callable(schedule):
        get_schedule(schedule)


def make_grid(sde: SDE, schedule, steps: int, eps: float, device=None, dtype=None) -> torch.Tensor:
    """The grid of ``schedule`` (a name, a schedule function, or an explicit 1-D tensor of times)."""
    if isinstance(schedule, torch.Tensor):
        checks.tensor("schedule", schedule, rank=1)
        grid = schedule.to(device=device, dtype=dtype)
        if grid.ndim != 1 or len(grid) < 2 or not bool((grid[1:] < grid[:-1]).all()):
            raise ValueError("an explicit schedule must be a 1-D strictly decreasing tensor of >= 2 times")
        if grid[-1].item() <= 0:
            raise ValueError(f"an explicit schedule must end at a time > 0, got {grid[-1].item()}")
        return grid  # used as given (e.g. another library's timesteps, which may start past T)
    fn = get_schedule(schedule) if isinstance(schedule, str) else schedule
    return fn(sde, steps, eps, device=device, dtype=dtype)
