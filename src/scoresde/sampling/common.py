"""Shared pieces of the samplers: argument checks, the prior draw, the grid's end, NFE counting,
Tweedie's denoiser and the one driver every sampler runs through.

A step function (``sample_<method>`` of ``ode``, ``stochastic``, ``pc``) has the k-diffusion shape
``sample_<method>(score_fn, sde, x, times, generator=None, **options) -> (x, x_mean)``: it moves x
from ``times[0]`` along the decreasing grid to ``times[-1]``, evaluating the score at grid times
(or, for EDM's churn, at noise levels between two of them) only, and returns the last iterate and
the last step's mean (the update without its fresh noise; x itself for deterministic steps).
"""

from __future__ import annotations

import math

import torch

from .. import checks
from ..sde import SDE
from ..utils import append_dims, generator_device


def lookup(table: dict, name: str, kind: str):
    return table[checks.choice(kind, name, table, kind)]


def check_args(sde: SDE, steps: int, eps: float):
    checks.sde(sde)
    check_int("steps", steps, 1)
    checks.eps(eps, sde)


def check_int(name: str, value, minimum: int) -> int:
    """``value`` as an int, or a ValueError naming the option when it is not a whole number
    >= ``minimum`` (2.7, True, NaN and strings are refused, never truncated)."""
    return checks.whole(name, value, minimum)


def check_finite_input(name: str, x: torch.Tensor) -> torch.Tensor:
    """``x`` unchanged, or a ValueError naming the argument when it holds NaN / Inf."""
    if not torch.isfinite(torch.as_tensor(x)).all():
        raise ValueError(f"{name} holds NaN or Inf values; pass finite numbers")
    return x


def check_sampling(score_fn, sde: SDE, shape, generator, device, dtype, x_T=None) -> tuple:
    """The arguments every sampler shares: ``(shape, device, dtype)`` checked (see ``checks``)."""
    checks.function("score_fn", score_fn)
    checks.sde(sde)
    shape = checks.shape("shape", shape)
    device = checks.device("device", device)
    dtype = checks.dtype("dtype", dtype)
    if x_T is not None:
        checks.tensor("x_T", x_T, min_rank=2)
        if tuple(x_T.shape) != shape:
            raise ValueError(f"x_T has shape {tuple(x_T.shape)} but the samples have shape {shape}; "
                             "pass a prior draw of the sample shape")
    on = device if device is not None else (x_T.device if x_T is not None else None)
    checks.generator("generator", generator, shape[0], on)
    return shape, device, dtype


def check_finite(x: torch.Tensor, what: str) -> torch.Tensor:
    """``x`` unchanged, or a FloatingPointError naming ``what`` when it holds NaN / Inf."""
    if not torch.isfinite(x).all():
        raise FloatingPointError(
            f"{what} produced non-finite values (NaN/Inf); the score network or the step size diverged"
        )
    return x


def _start(sde, shape, generator, device, dtype, x_T=None):
    """The starting point at t = T: ``x_T`` when given (a fixed prior draw), else a prior draw."""
    if x_T is not None:
        check_finite_input("x_T", x_T)
        if tuple(x_T.shape) != tuple(shape):
            raise ValueError(f"x_T has shape {tuple(x_T.shape)} but the samples have shape {tuple(shape)}; "
                             "pass a prior draw of the sample shape")
        return x_T.to(device=device or x_T.device, dtype=dtype or x_T.dtype)
    device = device if device is not None else generator_device(generator)
    return sde.prior_sampling(shape, generator, device=device, dtype=dtype)


def noise_level(sde: SDE, t) -> float:
    """sigma(t) = s(t) / a(t), EDM's noise level of the kernel at the time t (a float)."""
    t = torch.as_tensor([float(t)], dtype=torch.float64)
    return (sde.std(t) / sde.mean_coeff(t)).item()


def end_time(sde: SDE, eps: float, sigma_min: float | None = None) -> float:
    """The grid's last time: eps, or t(sigma_min) >= eps when the grid ends at the noise level
    ``sigma_min`` (EDM's sigma_min = 0.002 on [-1, 1] data). ValueError outside [sigma(eps), sigma(T))."""
    if sigma_min is None:
        return float(eps)
    lo, hi = noise_level(sde, eps), noise_level(sde, sde.T)
    if not lo * (1 - 1e-9) <= float(sigma_min) < hi:
        raise ValueError(f"sigma_min must lie in [sigma(eps), sigma(T)) = [{lo:.4g}, {hi:.4g}) for the "
                         f"{sde.name} SDE at eps={eps:g}, got {sigma_min}; pick a noise level inside")
    from .schedules import log_snr_inverse

    t = log_snr_inverse(sde, -torch.log(torch.tensor([float(sigma_min)], dtype=torch.float64))).item()
    return max(float(eps), t)


class CountedScore:
    """``score_fn`` counting its calls: one call of the batch is one NFE (per sample)."""

    def __init__(self, score_fn):
        self.score_fn, self.nfe = score_fn, 0

    def __call__(self, x, t):
        self.nfe += 1
        return self.score_fn(x, t)


def tweedie_denoise(score_fn, sde: SDE, x, t):
    """E[x(0) | x(t)] = (x + s(t)^2 score) / a(t) (Tweedie's formula for a Gaussian kernel)."""
    std = append_dims(sde.std(t), x.ndim)
    return (x + std**2 * score_fn(x, t)) / append_dims(sde.mean_coeff(t), x.ndim)


def final_tweedie(score_fn, sde: SDE, x, eps: float | None = None, schedule=None):
    """The final denoising of every sampler: E[x(0) | x(eps)] by Tweedie's formula (one NFE).

    eps is the grid's last time: ``schedule[-1]`` when the sampler was given an explicit grid."""
    if isinstance(schedule, torch.Tensor):
        eps = schedule[-1].item()
    eps = sde.sampling_eps if eps is None else eps
    return tweedie_denoise(score_fn, sde, x, torch.full((x.shape[0],), float(eps), device=x.device,
                                                        dtype=x.dtype))


def run_steps(step, score_fn, sde: SDE, shape, times_fn, generator=None, device=None, dtype=None,
              x_T=None, **options):
    """Start at x_T (or a prior draw), build the grid ``times_fn(device, dtype)`` and run the step
    function along it; returns ``(x, x_mean, t_end, nfe)`` with the NFE counted call by call."""
    x = _start(sde, shape, generator, device, dtype, x_T)
    times = times_fn(x.device, x.dtype)
    counted = CountedScore(score_fn)
    x, x_mean = step(counted, sde, x, times, generator=generator, **options)
    return x, x_mean, times[-1].item(), counted.nfe


def finish(score_fn, sde: SDE, x, x_mean, t_end: float, denoise: bool, what: str):
    """The sample of a trajectory: E[x(0) | x(t_end)] from the last step's mean (Tweedie, one NFE)
    with ``denoise``, else the last iterate x; returns ``(sample, extra NFE)``."""
    if denoise:
        return check_finite(final_tweedie(score_fn, sde, x_mean, t_end), what), 1
    return check_finite(x, what), 0


def check_options(method: str, options: dict, allowed) -> None:
    """ValueError naming an option the method does not take."""
    checks.options(method, options, allowed)


def check_range(name: str, value: float, lo: float, hi: float = math.inf, finite: bool = True) -> float:
    """``value`` as a float, or a ValueError naming the option when outside [lo, hi] or not a
    finite number (``finite=False``: an infinite bound such as S_tmax = inf is allowed)."""
    return checks.number(name, value, lo, hi, finite=finite)
