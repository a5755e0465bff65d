"""Predictor-corrector sampling (Algorithm 1 of Song et al. 2021) on an explicit time grid."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from ..sde import SDE
from ..utils import Generator
from .common import _check_args, _check_finite, _lookup, _start, final_tweedie
from .predictors import CORRECTORS, PREDICTORS
from .schedules import make_grid


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

    At each t_i: ``corrector_steps`` corrector steps, then one predictor step to t_{i+1}; the last
    lands on eps. With ``denoise`` the result is one Tweedie step at eps,
    (x + s(eps)^2 score) / a(eps), one more NFE. ``steps`` defaults to the SDE's N; ``schedule`` is
    a name of ``SCHEDULES``, a schedule function or an explicit grid; ``x_T`` a given prior draw.
    Returns ``(samples, nfe)``.
    """
    x, nfe = pc_trajectory(score_fn, sde, shape, steps, predictor, corrector, snr, corrector_steps,
                           eps, generator, device, dtype, progress, schedule=schedule, x_T=x_T)
    if denoise:
        x, nfe = final_tweedie(score_fn, sde, x, eps, schedule), nfe + 1
    return _check_finite(x, "pc_sample"), nfe


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
    schedule="time_uniform",
    x_T: torch.Tensor | None = None,
):
    """Algorithm 1's loop; returns ``(x, nfe)`` with x at the grid's last time eps (no denoising).

    Corrector-only sampling (predictor ``none``) runs its correctors at t_1, ..., t_steps = eps, so
    that it too ends at eps (a corrector at t takes its step size from the interval that starts
    at t; at eps that is the interval of the same length below it).
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
    x = _start(sde, shape, generator, device, dtype, x_T)
    grid = make_grid(sde, schedule, steps, eps, x.device, x.dtype)
    B, steps = shape[0], len(grid) - 1
    corrector_only = predictor == "none"
    for i in tqdm(range(steps), disable=not progress, desc=f"{predictor}+{corrector}", leave=False):
        t, t_next = grid[i].expand(B), grid[i + 1].expand(B)
        t_c, t_c_next = (t_next, torch.clamp(2 * t_next - t, min=0.0)) if corrector_only else (t, t_next)
        for _ in range(corrector_steps):
            x, _ = correct(score_fn, sde, x, t_c, t_c_next, snr, generator)
        x, _ = predict(score_fn, sde, x, t, t_next, generator)
    nfe = steps * (int(predictor != "none") + corrector_steps * int(corrector != "none"))
    return x, nfe
