"""Samplers for the reverse-time SDE (eq. 6) and the probability-flow ODE (eq. 13).

- ``schedules``: explicit decreasing time grids T = t_0 > ... > t_steps = eps (``time_uniform``,
  ``logsnr_uniform``, ``karras``), lambda(t) = log(a / s) and its closed-form inverse.
- ``predictors``: predictors and correctors of PC sampling, one calling convention
  ``predictor(score_fn, sde, x, t, t_next, generator) -> (x, x_mean)``,
  ``corrector(score_fn, sde, x, t, t_next, snr, generator) -> (x, x_mean)``.
- step functions ``sample_<method>(score_fn, sde, x, times, generator=None, **options) -> (x, x_mean)``
  (k-diffusion's shape): ``pc.sample_pc``, the ODE methods of ``ode``, the SDE methods of
  ``stochastic``.
- ``methods``: the one table ``METHODS`` (name -> step function, default schedule, NFE per step,
  kind), ``ODE_METHODS`` / ``SDE_METHODS``, and ``ode_sample`` / ``sde_sample`` over it;
  ``pc.pc_sample`` (Algorithm 1) over ``sample_pc``.

Every sampler lands on its grid's last time; with ``denoise`` its result is the last step's mean
followed by one Tweedie step there.
"""

from .common import check_finite, final_tweedie, finish, tweedie_denoise
from .methods import (
    DEFAULT_SIGMA_MIN,
    METHODS,
    ODE_METHODS,
    SDE_METHODS,
    Method,
    grid_end,
    ode_sample,
    sde_sample,
    trajectory,
)
from .ode import (
    dopri5,
    sample_dpm_solver_2,
    sample_dpm_solver_3,
    sample_dpmpp_2m,
    sample_euler,
    sample_euler_sigma,
    sample_heun,
    sample_heun_sigma,
    sample_rk45,
)
from .pc import pc_sample, pc_trajectory, sample_pc
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
from .stochastic import sample_dpmpp_2m_sde, sample_dpmpp_3m_sde, sample_edm

__all__ = [
    "CORRECTORS", "DEFAULT_SIGMA_MIN", "METHODS", "Method", "ODE_METHODS", "PREDICTORS", "SCHEDULES",
    "SDE_METHODS", "ald", "ancestral", "check_finite", "dopri5", "euler_maruyama", "final_tweedie",
    "finish",
    "get_schedule", "grid_end", "karras", "langevin", "log_snr", "log_snr_inverse", "logsnr_uniform",
    "make_grid",
    "no_corrector", "no_predictor", "ode_sample", "pc_sample", "pc_trajectory", "reverse_diffusion",
    "sample_dpm_solver_2", "sample_dpm_solver_3", "sample_dpmpp_2m", "sample_dpmpp_2m_sde",
    "sample_dpmpp_3m_sde", "sample_edm", "sample_euler", "sample_euler_sigma", "sample_heun",
    "sample_heun_sigma", "sample_pc", "sample_rk45", "sde_sample", "time_uniform", "trajectory",
    "tweedie_denoise",
]
