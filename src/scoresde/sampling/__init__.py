"""Samplers for the reverse-time SDE (eq. 6) and the probability-flow ODE (eq. 13).

- ``schedules``: explicit decreasing time grids T = t_0 > ... > t_steps = eps (``time_uniform``,
  ``logsnr_uniform``, ``karras``), lambda(t) = log(a / s) and its closed-form inverse.
- ``predictors``: predictors and correctors of PC sampling, one calling convention
  ``predictor(score_fn, sde, x, t, t_next, generator) -> (x, x_mean)``,
  ``corrector(score_fn, sde, x, t, t_next, snr, generator) -> (x, x_mean)``.
- ``pc``: ``pc_sample`` (Algorithm 1); ``ode``: ``ode_sample`` (RK45, Euler / Heun in t or sigma,
  EDM's Heun, DPM-Solver-2 / -3, DPM-Solver++(2M)).

Every sampler lands on eps; with ``denoise`` its result is one Tweedie step at eps.
"""

from .common import _check_args, _check_finite, _lookup, _start, final_tweedie, tweedie_denoise
from .ode import (
    DEFAULT_SCHEDULE,
    NFE_PER_STEP,
    ODE_METHODS,
    _adaptive_ode,
    _fixed_step_ode,
    _sigma_step_ode,
    dopri5,
    ode_sample,
    ode_trajectory,
)
from .pc import pc_sample, pc_trajectory
from .predictors import (
    CORRECTORS,
    PREDICTORS,
    ald,
    ancestral,
    euler_maruyama,
    langevin,
    no_corrector,
    no_predictor,
    reverse_diffusion,
)
from .schedules import (
    SCHEDULES,
    get_schedule,
    karras,
    log_snr,
    log_snr_inverse,
    logsnr_uniform,
    make_grid,
    time_uniform,
)


def time_grid(sde, steps: int, eps: float, device=None, dtype=None):
    """Deprecated alias kept for old callers: ``steps`` uniform times T = t_0 > ... = eps.

    Note it has ``steps`` points (the old PC grid); samplers now use ``time_uniform`` (steps + 1).
    """
    import torch

    return torch.linspace(sde.T, eps, steps, device=device, dtype=dtype)


__all__ = [
    "CORRECTORS", "DEFAULT_SCHEDULE", "NFE_PER_STEP", "ODE_METHODS", "PREDICTORS", "SCHEDULES",
    "_adaptive_ode", "_check_args", "_check_finite", "_fixed_step_ode", "_lookup", "_sigma_step_ode",
    "_start", "ald", "ancestral", "dopri5", "euler_maruyama", "final_tweedie", "get_schedule",
    "karras", "langevin", "log_snr", "log_snr_inverse", "logsnr_uniform", "make_grid",
    "no_corrector", "no_predictor", "ode_sample", "ode_trajectory", "pc_sample", "pc_trajectory",
    "reverse_diffusion", "time_grid", "time_uniform", "tweedie_denoise",
]
