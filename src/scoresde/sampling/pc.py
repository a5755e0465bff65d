"""Predictor-corrector sampling (Algorithm 1 of Song et al. 2021) on an explicit time grid."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from .. import checks
from ..sde import SDE
from ..utils import Generator
from .common import check_args, check_int, check_range, check_sampling, finish, lookup, run_steps
from .predictors import CORRECTORS, PREDICTORS
from .schedules import check_schedule, make_grid


def sample_pc(score_fn, sde: SDE, x, times, generator=None, predictor: str = "reverse_diffusion",
              corrector: str = "langevin", snr: float = 0.16, corrector_steps: int = 1,
              progress: bool = False):
    """Algorithm 1 along ``times``: at each t_i ``corrector_steps`` corrector steps, then one predictor
    step to t_{i+1}; returns (x, x_mean) at the grid's last time, x_mean the last predictor step's
    mean (the official code's ``x_mean``).

    Corrector-only sampling (predictor ``none``) runs its correctors at t_1, ..., t_N = eps, so that
    it too ends at eps (a corrector at t takes its step size from the interval that starts at t; at
    eps that is the interval of the same length below it); its x_mean is x, as the official code's.
    """
    checks.start(sde, x, times, generator)
    predict = lookup(PREDICTORS, predictor, "predictor")
    correct = lookup(CORRECTORS, corrector, "corrector")
    snr = check_range("snr", snr, 0.0)
    corrector_steps = check_int("corrector_steps", corrector_steps, 0)
    progress = checks.flag("progress", progress)
    B, x_mean = x.shape[0], x
    corrector_only = predictor == "none"
    for i in tqdm(range(len(times) - 1), disable=not progress, desc=f"{predictor}+{corrector}", leave=False):
        t, t_next = times[i].expand(B), times[i + 1].expand(B)
        t_c, t_c_next = (t_next, torch.clamp(2 * t_next - t, min=0.0)) if corrector_only else (t, t_next)
        for _ in range(int(corrector_steps)):
            x, _ = correct(score_fn, sde, x, t_c, t_c_next, snr, generator)
        x, x_mean = predict(score_fn, sde, x, t, t_next, generator)
    return x, x_mean


def pc_trajectory(score_fn, sde: SDE, shape, steps: int | None = None, predictor: str = "reverse_diffusion",
                  corrector: str = "langevin", snr: float = 0.16, corrector_steps: int = 1,
                  eps: float | None = None, generator: Generator = None, device=None, dtype=None,
                  progress: bool = False, schedule="time_uniform", x_T: torch.Tensor | None = None):
    """Algorithm 1 from x_T or a prior draw: ``(x, x_mean, t_end, nfe)`` at the grid's last time."""
    shape, device, dtype = check_sampling(score_fn, sde, shape, generator, device, dtype, x_T)
    steps = sde.N if steps is None else check_int("steps", steps, 1)
    eps = sde.sampling_eps if eps is None else eps
    check_args(sde, steps, eps)
    lookup(PREDICTORS, predictor, "predictor")
    lookup(CORRECTORS, corrector, "corrector")
    snr = check_range("snr", snr, 0.0)
    corrector_steps = check_int("corrector_steps", corrector_steps, 0)
    progress = checks.flag("progress", progress)
    check_schedule(schedule)
    return run_steps(sample_pc, score_fn, sde, shape,
                     lambda device, dtype: make_grid(sde, schedule, steps, eps, device, dtype),
                     generator, device, dtype, x_T, predictor=predictor, corrector=corrector, snr=snr,
                     corrector_steps=corrector_steps, progress=progress)


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
    schedule="time_uniform",
    x_T: torch.Tensor | None = None,
):
    """Predictor-corrector sampling (Algorithm 1) along ``schedule``'s grid T = t_0 > ... > t_steps = eps.

    With ``denoise`` the result is the last predictor step's mean (no noise) followed by one Tweedie
    step at eps, (x + s(eps)^2 score) / a(eps), one more NFE; without, the last iterate. ``steps``
    defaults to the SDE's N; ``schedule`` is a name of ``SCHEDULES``, a schedule function or an
    explicit grid; ``x_T`` a given prior draw. Returns ``(samples, nfe)``.
    """
    denoise = checks.flag("denoise", denoise)
    x, x_mean, t_end, nfe = pc_trajectory(score_fn, sde, shape, steps, predictor, corrector, snr,
                                          corrector_steps, eps, generator, device, dtype, progress,
                                          schedule, x_T)
    x, extra = finish(score_fn, sde, x, x_mean, t_end, denoise, "pc_sample")
    return x, nfe + extra
