"""Continuous-time denoising score matching (Song et al. 2021, eq. 7) and the network-to-score map."""

from __future__ import annotations

import torch

from . import checks
from .sde import SDE, VESDE
from .utils import Generator, append_dims, rand, randn


def get_score_fn(sde: SDE, model: torch.nn.Module):
    """Turn a network into ``score_fn(x, t)`` as in the paper's code.

    The network sees ``sde.noise_condition(t)`` (log sigma for VE, 999 t for VP / sub-VP). Its output
    is divided by the kernel std: VE ``score = out / sigma(t)`` (NCSN++ ``scale_by_sigma``);
    VP / sub-VP ``score = -out / s(t)`` (the network predicts the noise z).
    """
    sign = 1.0 if isinstance(sde, VESDE) else -1.0

    def score_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = model(x, sde.noise_condition(t))
        return sign * out / append_dims(sde.std(t), x.ndim)

    return score_fn


def dsm_loss(
    model: torch.nn.Module,
    sde: SDE,
    x: torch.Tensor,
    generator: Generator = None,
    eps: float = 1e-5,
    likelihood_weighting: bool = False,
    reduce: str = "mean",
    t: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
) -> torch.Tensor:
    """E_t lambda(t) E ||s(x(t), t) - grad log p_0t(x(t) | x(0))||^2 with t ~ U(eps, T) (eq. 7).

    ``lambda(t) = s(t)^2`` by default (then the target is ``-z`` after multiplying by s(t)), or the
    likelihood weighting ``lambda(t) = g(t)^2`` of Song et al. (2021b). ``reduce`` is ``mean`` or
    ``sum`` over the data dimensions; the batch is always averaged. Given ``t`` and ``z`` (a
    rank's slice of a global draw in distributed training), they are used instead of drawing.
    """
    if not isinstance(reduce, str) or reduce not in ("mean", "sum"):
        raise ValueError(f"reduce must be 'mean' or 'sum', got {reduce!r}")
    # cheap checks only (no pass over x): this runs at every training step
    checks.sde(sde)
    checks.tensor("x", x, min_rank=2, finite=False)
    eps = checks.eps(eps, sde)
    likelihood_weighting = checks.flag("likelihood_weighting", likelihood_weighting)
    B = x.shape[0]
    if t is None:
        t = rand((B,), generator, device=x.device, dtype=x.dtype) * (sde.T - eps) + eps
    if z is None:
        z = randn(x.shape, generator, device=x.device, dtype=x.dtype)
    mean, std = sde.marginal_prob(x, t)
    std_ = append_dims(std, x.ndim)
    score = get_score_fn(sde, model)(mean + std_ * z, t)
    if likelihood_weighting:
        g2 = append_dims(sde.sde(torch.zeros_like(x), t)[1] ** 2, x.ndim)
        losses = (score + z / std_) ** 2 * g2
    else:
        losses = (score * std_ + z) ** 2
    losses = losses.flatten(1)
    losses = losses.mean(dim=1) if reduce == "mean" else losses.sum(dim=1)
    return losses.mean()
