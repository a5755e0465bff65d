"""Shared pieces of the samplers: argument checks, the prior draw, Tweedie's denoiser."""

from __future__ import annotations

import torch

from ..sde import SDE
from ..utils import append_dims, generator_device


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


def _start(sde, shape, generator, device, dtype, x_T=None):
    """The starting point at t = T: ``x_T`` when given (a fixed prior draw), else a prior draw."""
    if x_T is not None:
        if tuple(x_T.shape) != tuple(shape):
            raise ValueError(f"x_T has shape {tuple(x_T.shape)} but the samples have shape {tuple(shape)}; "
                             "pass a prior draw of the sample shape")
        return x_T.to(device=device or x_T.device, dtype=dtype or x_T.dtype)
    device = device if device is not None else generator_device(generator)
    return sde.prior_sampling(shape, generator, device=device, dtype=dtype)


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
