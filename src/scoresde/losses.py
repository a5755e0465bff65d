"""Continuous-time denoising score matching (Song et al. 2021, eq. 7) and the network-to-score map.

Every SDE perturbs data as x(t) = a(t) x(0) + s(t) z with z ~ N(0, I), so x(t) = a(t) (x(0) +
sigma(t) z) with the noise level sigma(t) = s(t) / a(t) (EDM's sigma; VE: a = 1, sigma = s).
Two parameterisations of the network F turn it into ``score_fn(x, t)``:

- ``paper``: Song et al.'s. F sees ``sde.noise_condition(t)`` (log sigma for VE, 999 t for VP /
  sub-VP); VE ``score = F / s(t)``, VP / sub-VP ``score = -F / s(t)`` (F predicts the noise z).
- ``edm``: EDM's preconditioning (Karras et al. 2022, Table 1) in x_hat = x / a(t) = x(0) + sigma z:
  D(x_hat; sigma) = c_skip x_hat + c_out F(c_in x_hat, c_noise) with c_skip = sd^2 / (sigma^2 + sd^2),
  c_out = sigma sd / sqrt(sigma^2 + sd^2), c_in = 1 / sqrt(sigma^2 + sd^2), c_noise = log(sigma) / 4
  (sd = sigma_data). Tweedie's formula for x_hat, grad log p(x_hat) = (D - x_hat) / sigma^2, and
  p_t(x) = a^-dim p(x / a) give the score of x(t): (a D(x / a; sigma) - x) / s(t)^2.

The loss is one function of the epsilon residual r = s(t) score + z (zero for the exact score of
the kernel): ``loss = w(t) |r|^2``. Each weighting is stated on the loss it was published for
(score, epsilon or denoiser loss) and converted to its w(t) (:func:`loss_weight`).
"""

from __future__ import annotations

from functools import partial

import torch

from . import checks
from .sampling.schedules import log_snr, log_snr_inverse
from .sde import SDE, VESDE
from .utils import Generator, append_dims, rand, randn

PARAMETERIZATIONS = ("paper", "edm")
NOISE_DISTRIBUTIONS = ("uniform", "lognormal")
WEIGHTINGS = ("paper", "likelihood", "edm", "min-snr")


def noise_level(sde: SDE, t: torch.Tensor) -> torch.Tensor:
    """sigma(t) = s(t) / a(t), shape (B,): x(t) / a(t) is the data plus N(0, sigma^2 I) noise."""
    return torch.exp(-log_snr(sde, t))


def edm_coefficients(sigma: torch.Tensor, sigma_data: float):
    """(c_skip, c_out, c_in, c_noise) of EDM's preconditioning (Karras et al. 2022, Table 1)."""
    total = sigma**2 + sigma_data**2
    return sigma_data**2 / total, sigma * sigma_data / total.sqrt(), 1.0 / total.sqrt(), sigma.log() / 4


def paper_score_fn(sde: SDE, model: torch.nn.Module):
    """Song et al.'s map: VE ``score = F / sigma(t)`` (NCSN++ ``scale_by_sigma``); VP / sub-VP
    ``score = -F / s(t)`` (F predicts the noise z). F sees ``sde.noise_condition(t)``."""
    sign = 1.0 if isinstance(sde, VESDE) else -1.0

    def score_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = model(x, sde.noise_condition(t))
        return sign * out / append_dims(sde.std(t), x.ndim)

    return score_fn


def edm_denoiser(sde: SDE, model: torch.nn.Module, sigma_data: float = 0.5):
    """``denoiser(x, t) -> D(x / a(t); sigma(t))``, EDM's preconditioned estimate of E[x(0) | x(t)]."""

    def denoiser(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x_hat = x / append_dims(sde.mean_coeff(t), x.ndim)
        c_skip, c_out, c_in, c_noise = edm_coefficients(noise_level(sde, t), sigma_data)
        out = model(append_dims(c_in, x.ndim) * x_hat, c_noise)
        return append_dims(c_skip, x.ndim) * x_hat + append_dims(c_out, x.ndim) * out

    return denoiser


def edm_score_fn(sde: SDE, model: torch.nn.Module, sigma_data: float = 0.5):
    """score(x, t) = (a D(x / a; sigma) - x) / s^2 with EDM's D (module docstring), computed as
    (a c_out F - (1 - c_skip) x) / s^2 so that c_skip x - x does not cancel at small sigma."""

    def score_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a, s = append_dims(sde.mean_coeff(t), x.ndim), append_dims(sde.std(t), x.ndim)
        sigma = noise_level(sde, t)
        _, c_out, c_in, c_noise = edm_coefficients(sigma, sigma_data)
        one_minus_skip = append_dims(sigma**2 / (sigma**2 + sigma_data**2), x.ndim)
        out = model(append_dims(c_in, x.ndim) * x / a, c_noise)
        return (a * append_dims(c_out, x.ndim) * out - one_minus_skip * x) / s**2

    return score_fn


def get_score_fn(sde: SDE, model: torch.nn.Module, parameterization: str = "paper",
                 sigma_data: float = 0.5):
    """Turn a network into ``score_fn(x, t)`` by its parameterisation (``paper`` or ``edm``, module
    docstring); ``sigma_data`` is EDM's data standard deviation (unused by ``paper``)."""
    parameterization = checks.choice("parameterization", parameterization, PARAMETERIZATIONS)
    if parameterization == "paper":
        return paper_score_fn(sde, model)
    sigma_data = checks.number("sigma_data", sigma_data, 0.0, open_lo=True)
    return edm_score_fn(sde, model, sigma_data)


def get_class_score_fn(sde: SDE, model: torch.nn.Module, parameterization: str = "paper",
                       sigma_data: float = 0.5):
    """A class-conditional network (``model(x, cond, labels)``) as ``score_fn(x, t, labels)``:
    the score of p_t(x | y) for labels y in 0..K-1, of p_t(x) for the "no label" K (classifier-free
    guidance, ``scoresde.controllable.classifier_free_score``)."""

    def score_fn(x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return get_score_fn(sde, partial(model, labels=labels), parameterization, sigma_data)(x, t)

    return score_fn


def sample_times(sde: SDE, batch: int, generator: Generator = None, eps: float = 1e-5,
                 distribution: str = "uniform", p_mean: float = -1.2, p_std: float = 1.2,
                 device=None, dtype=None) -> torch.Tensor:
    """Diffusion times t of shape (batch,) for the loss.

    ``uniform``: the paper's t ~ U(eps, T). ``lognormal``: EDM's log sigma ~ N(p_mean, p_std^2)
    mapped back through the SDE's sigma(t) = s(t) / a(t) (closed-form inverse,
    :func:`scoresde.sampling.log_snr_inverse`) and clamped to [eps, T], so t(sigma) puts the noise
    levels outside [sigma(eps), sigma(T)] on the ends.
    """
    if distribution == "uniform":
        return rand((batch,), generator, device=device, dtype=dtype) * (sde.T - eps) + eps
    log_sigma = randn((batch,), generator, device=device, dtype=dtype) * p_std + p_mean
    return log_snr_inverse(sde, -log_sigma).clamp(eps, sde.T)


def loss_weight(sde: SDE, t: torch.Tensor, weighting: str = "paper", sigma_data: float = 0.5,
                min_snr_gamma: float = 5.0) -> torch.Tensor | None:
    """w(t) of ``loss = w(t) |s(t) score + z|^2`` (the epsilon loss |eps_hat - z|^2, eps_hat = -s score),
    shape (B,); None for ``paper`` (w = 1). With sigma = s / a, SNR = 1 / sigma^2, D the denoiser
    (x(0) estimate) and g the diffusion:

    - ``paper``: lambda(t) = s(t)^2 on the score loss |score + z / s|^2 (Song et al. eq. 7), i.e. the
      unweighted epsilon loss, w = 1;
    - ``likelihood``: lambda(t) = g(t)^2 on the score loss (Song et al. 2021b), w = g^2 / s^2;
    - ``edm``: lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2 on the denoiser loss |D - x(0)|^2
      (Karras et al. 2022, Table 1; = 1 / c_out^2, the unweighted loss on F's target). As
      |D - x(0)|^2 = sigma^2 |eps_hat - z|^2, w = (sigma^2 + sd^2) / sd^2;
    - ``min-snr``: min(SNR, gamma) / SNR on the epsilon loss (Hang et al. 2023; = min(SNR, gamma)
      on the denoiser loss), w = min(1, gamma sigma^2).
    """
    if weighting == "paper":
        return None
    if weighting == "likelihood":
        g = sde.sde(torch.zeros_like(t)[:, None], t)[1]
        return (g / sde.std(t)) ** 2
    sigma2 = noise_level(sde, t) ** 2
    if weighting == "edm":
        return (sigma2 + sigma_data**2) / sigma_data**2
    return torch.clamp(min_snr_gamma * sigma2, max=1.0)


def dsm_loss(
    model: torch.nn.Module,
    sde: SDE,
    x: torch.Tensor,
    generator: Generator = None,
    eps: float = 1e-5,
    weighting: str = "paper",
    reduce: str = "mean",
    t: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    parameterization: str = "paper",
    sigma_data: float = 0.5,
    noise_distribution: str = "uniform",
    p_mean: float = -1.2,
    p_std: float = 1.2,
    min_snr_gamma: float = 5.0,
) -> torch.Tensor:
    """E_t lambda(t) E ||s(x(t), t) - grad log p_0t(x(t) | x(0))||^2 (eq. 7), as w(t) |s(t) score + z|^2.

    The defaults are the paper's recipe: ``parameterization="paper"``, t ~ U(eps, T)
    (``noise_distribution="uniform"``), lambda(t) = s(t)^2 (``weighting="paper"``). The options:
    ``parameterization="edm"`` (:func:`edm_score_fn`, with ``sigma_data``),
    ``noise_distribution="lognormal"`` (:func:`sample_times`, with ``p_mean`` / ``p_std``) and
    ``weighting`` ``likelihood`` / ``edm`` / ``min-snr`` (:func:`loss_weight`, with
    ``min_snr_gamma``). ``reduce`` is ``mean`` or ``sum`` over the data dimensions; the batch is
    always averaged. Given ``t`` and ``z`` (a rank's slice of a global draw in distributed
    training), they are used instead of drawing (t first, then z).
    """
    # cheap checks only (no pass over x): this runs at every training step
    reduce = checks.choice("reduce", reduce, ("mean", "sum"))
    weighting = checks.choice("weighting", weighting, WEIGHTINGS)
    noise_distribution = checks.choice("noise_distribution", noise_distribution, NOISE_DISTRIBUTIONS)
    checks.sde(sde)
    checks.tensor("x", x, min_rank=2, finite=False)
    eps = checks.eps(eps, sde)
    sigma_data = checks.number("sigma_data", sigma_data, 0.0, open_lo=True)
    p_mean = checks.number("p_mean", p_mean)
    p_std = checks.number("p_std", p_std, 0.0, open_lo=True)
    min_snr_gamma = checks.number("min_snr_gamma", min_snr_gamma, 0.0, open_lo=True)
    B = x.shape[0]
    if t is None:
        t = sample_times(sde, B, generator, eps, noise_distribution, p_mean, p_std, x.device, x.dtype)
    if z is None:
        z = randn(x.shape, generator, device=x.device, dtype=x.dtype)
    mean, std = sde.marginal_prob(x, t)
    std_ = append_dims(std, x.ndim)
    score = get_score_fn(sde, model, parameterization, sigma_data)(mean + std_ * z, t)
    losses = (score * std_ + z) ** 2
    w = loss_weight(sde, t, weighting, sigma_data, min_snr_gamma)
    if w is not None:
        losses = losses * append_dims(w, x.ndim)
    losses = losses.flatten(1)
    losses = losses.mean(dim=1) if reduce == "mean" else losses.sum(dim=1)
    return losses.mean()
