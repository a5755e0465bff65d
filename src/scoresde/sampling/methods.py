"""The one table of ODE and SDE sampling methods, and ``ode_sample`` / ``sde_sample`` over it.

==================== ====== ====================================================== ============== ========
method               kind   step function                                          schedule       NFE/step
==================== ====== ====================================================== ============== ========
``rk45``             ode    adaptive Dormand-Prince (rtol, atol)                   --             adaptive
``euler`` / ``heun`` ode    Euler / Heun in t                                      time_uniform   1 / 2
``euler-sigma``      ode    Euler in sigma = s / a (EDM)                           time_uniform   1
``heun-sigma``       ode    Heun in sigma                                          time_uniform   2
``edm-heun``         ode    Heun in sigma (Karras et al. 2022, Alg. 1)             karras         2
``dpm-solver-2``/-3  ode    DPM-Solver-2 / -3 (Lu et al. 2022, Alg. 4 / 5)         logsnr_uniform 2 / 3
``dpmpp-2m``         ode    DPM-Solver++(2M) (Lu et al. 2022b, Alg. 2)             logsnr_uniform 1
``edm``              sde    EDM's stochastic sampler (Karras et al. 2022, Alg. 2)  karras         2
``dpmpp-2m-sde``     sde    SDE-DPM-Solver++(2M) (Lu et al. 2022b)                 logsnr_uniform 1
``dpmpp-3m-sde``     sde    DPM-Solver++(3M) SDE (k-diffusion)                     logsnr_uniform 1
==================== ====== ====================================================== ============== ========

PC sampling (``pc.pc_sample``) takes a predictor and a corrector instead (``PREDICTORS``,
``CORRECTORS``). Grids of the fixed-step methods end at eps, or at the noise level ``sigma_min``
(``DEFAULT_SIGMA_MIN`` per SDE when not given); with ``denoise`` the last step's mean is then mapped
to E[x(0) | x(t_end)] by one Tweedie step.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .. import checks
from ..sde import SDE
from ..utils import Generator
from .common import (
    check_args,
    check_int,
    check_options,
    check_sampling,
    end_time,
    finish,
    lookup,
    run_steps,
)
from .ode import (
    sample_dpm_solver_2,
    sample_dpm_solver_3,
    sample_dpmpp_2m,
    sample_euler,
    sample_euler_sigma,
    sample_heun,
    sample_heun_sigma,
    sample_rk45,
)
from .schedules import check_schedule, make_grid
from .stochastic import sample_dpmpp_2m_sde, sample_dpmpp_3m_sde, sample_edm


@dataclass(frozen=True)
class Method:
    """A sampling method: its step function, default schedule (None: adaptive, the grid is
    [T, t_end]), NFE per step (None: adaptive) and kind (``ode`` or ``sde``)."""

    step: Callable
    schedule: str | None
    nfe_per_step: int | None
    kind: str

    @property
    def options(self) -> tuple[str, ...]:
        """The keyword options of the step function (after score_fn, sde, x, times, generator)."""
        return tuple(inspect.signature(self.step).parameters)[5:]


METHODS: dict[str, Method] = {
    "rk45": Method(sample_rk45, None, None, "ode"),
    "heun": Method(sample_heun, "time_uniform", 2, "ode"),
    "euler": Method(sample_euler, "time_uniform", 1, "ode"),
    "heun-sigma": Method(sample_heun_sigma, "time_uniform", 2, "ode"),
    "euler-sigma": Method(sample_euler_sigma, "time_uniform", 1, "ode"),
    "edm-heun": Method(sample_heun_sigma, "karras", 2, "ode"),
    "dpm-solver-2": Method(sample_dpm_solver_2, "logsnr_uniform", 2, "ode"),
    "dpm-solver-3": Method(sample_dpm_solver_3, "logsnr_uniform", 3, "ode"),
    "dpmpp-2m": Method(sample_dpmpp_2m, "logsnr_uniform", 1, "ode"),
    "edm": Method(sample_edm, "karras", 2, "sde"),
    "dpmpp-2m-sde": Method(sample_dpmpp_2m_sde, "logsnr_uniform", 1, "sde"),
    "dpmpp-3m-sde": Method(sample_dpmpp_3m_sde, "logsnr_uniform", 1, "sde"),
}
ODE_METHODS = tuple(k for k, m in METHODS.items() if m.kind == "ode")
SDE_METHODS = tuple(k for k, m in METHODS.items() if m.kind == "sde")

# Where the fixed-step grids of ode_sample / sde_sample end by default: the noise level sigma_min per
# SDE (None: at eps). Measured with exact mixture scores (docs/samplers.md, "Schedule ends").
DEFAULT_SIGMA_MIN: dict[str, float | None] = {"ve": None, "vp": None, "subvp": 0.01}


def grid_end(sde: SDE, method: str, eps: float | None, sigma_min: float | None, schedule=None) -> float:
    """The last time of a method's grid: eps, or t(sigma_min) with the SDE's default sigma_min."""
    eps = sde.sampling_eps if eps is None else eps
    if isinstance(schedule, torch.Tensor):
        if sigma_min is not None:
            raise ValueError("sigma_min is for named schedules; an explicit grid already sets its end")
        return schedule[-1].item()
    if sigma_min is None and METHODS[method].nfe_per_step is not None:
        sigma_min = DEFAULT_SIGMA_MIN.get(sde.name)
    return end_time(sde, eps, sigma_min)


def trajectory(score_fn, sde: SDE, shape, method: str, steps: int | None = None, schedule=None,
               eps: float | None = None, sigma_min: float | None = None, generator: Generator = None,
               device=None, dtype=None, x_T: torch.Tensor | None = None, kind: str | None = None,
               **options):
    """Run one method of ``METHODS`` (of ``kind`` when given) from x_T or a prior draw.

    Returns ``(x, x_mean, t_end, nfe)``: the last iterate, the last step's mean, the grid's last
    time and the counted NFE. Every argument is checked before the first score evaluation.
    """
    shape, device, dtype = check_sampling(score_fn, sde, shape, generator, device, dtype, x_T)
    table = METHODS if kind is None else {k: m for k, m in METHODS.items() if m.kind == kind}
    spec = lookup(table, method, f"{(kind or 'sampling').upper() if kind else 'sampling'} method")
    check_options(method, options, spec.options)
    eps = sde.sampling_eps if eps is None else eps
    steps = sde.N if steps is None else check_int("steps", steps, 1)
    check_args(sde, steps, eps)
    if schedule is not None:
        check_schedule(schedule)
    if sigma_min is not None:
        sigma_min = checks.number("sigma_min", sigma_min, 0.0, open_lo=True)
    t_end = grid_end(sde, method, eps, sigma_min, schedule)

    def times(device, dtype):
        if spec.nfe_per_step is None:
            return torch.tensor([sde.T, t_end], device=device, dtype=dtype)
        return make_grid(sde, spec.schedule if schedule is None else schedule, steps, t_end, device, dtype)

    # the options' values are checked by the step function before its first score evaluation
    return run_steps(spec.step, score_fn, sde, shape, times, generator, device, dtype, x_T, **options)


def ode_sample(score_fn, sde: SDE, shape, method: str = "rk45", steps: int | None = None,
               rtol: float = 1e-5, atol: float = 1e-5, eps: float | None = None, denoise: bool = False,
               generator: Generator = None, device=None, dtype=None, schedule=None,
               x_T: torch.Tensor | None = None, sigma_min: float | None = None):
    """Sample by integrating the probability-flow ODE (eq. 13) from T to eps (or t(sigma_min)).

    ``method``: ``rk45`` (adaptive, rtol / atol) or a fixed-step ODE method of ``METHODS`` with
    ``steps`` steps along ``schedule`` (a name of ``SCHEDULES``, a schedule function or an explicit
    grid; None picks the method's default). With ``denoise`` a final Tweedie step maps x(t_end) to
    E[x(0) | x(t_end)] (one more NFE). ``x_T`` is a given prior draw. Returns ``(samples, nfe)``.
    """
    denoise = checks.flag("denoise", denoise)
    rtol = checks.number("rtol", rtol, 0.0, open_lo=True)
    atol = checks.number("atol", atol, 0.0, open_lo=True)
    options = {"rtol": rtol, "atol": atol} if method == "rk45" else {}
    x, x_mean, t_end, nfe = trajectory(score_fn, sde, shape, method, steps, schedule, eps, sigma_min,
                                       generator, device, dtype, x_T, kind="ode", **options)
    x, extra = finish(score_fn, sde, x, x_mean, t_end, denoise, "ode_sample")
    return x, nfe + extra


def sde_sample(score_fn, sde: SDE, shape, method: str, steps: int, schedule=None, eps: float | None = None,
               denoise: bool = True, generator: Generator = None, device=None, dtype=None,
               x_T: torch.Tensor | None = None, sigma_min: float | None = None, **options):
    """Sample with a fast reverse-SDE method of ``SDE_METHODS`` (``edm``, ``dpmpp-2m-sde``,
    ``dpmpp-3m-sde``) in ``steps`` steps along ``schedule`` (None: the method's default grid),
    ending at eps or the noise level ``sigma_min`` (``DEFAULT_SIGMA_MIN`` per SDE when None).

    ``options`` are the method's own (``edm``: S_churn, S_tmin, S_tmax, S_noise; ``dpmpp-*-sde``:
    eta, s_noise). With ``denoise`` the last step's mean (without its noise) is mapped to
    E[x(0) | x(t_end)] by Tweedie's formula (one more NFE); without, the last iterate is returned.
    ``generator`` may be one per sample. Returns ``(samples, nfe)``.
    """
    denoise = checks.flag("denoise", denoise)
    x, x_mean, t_end, nfe = trajectory(score_fn, sde, shape, method, steps, schedule, eps, sigma_min,
                                       generator, device, dtype, x_T, kind="sde", **options)
    x, extra = finish(score_fn, sde, x, x_mean, t_end, denoise, "sde_sample")
    return x, nfe + extra
