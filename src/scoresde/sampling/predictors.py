"""Predictors and correctors of predictor-corrector sampling (Song et al. 2021, Appendix E-G).

One calling convention for every step (k-diffusion style)::

    predictor(score_fn, sde, x, t, t_next, generator=None) -> (x, x_mean)
    corrector(score_fn, sde, x, t, t_next, snr, generator=None) -> (x, x_mean)

``t`` and ``t_next < t`` have shape (B,) and come from an explicit time grid (``schedules``). A
predictor moves x from t to t_next evaluating the score at t only; a corrector stays at t and
takes the interval (t, t_next) for its step size. ``x_mean`` is the update without its noise.
No step evaluates the score outside the grid, so none leaves [eps, T].
"""

from __future__ import annotations

import torch

from ..sde import SDE
from ..utils import append_dims, batch_sum, randn


def euler_maruyama(score_fn, sde: SDE, x, t, t_next, generator=None):
    """Euler-Maruyama on the reverse SDE (eq. 6): x <- x - [f - g^2 s] h + g sqrt(h) z, h = t - t_next."""
    h = append_dims(t - t_next, x.ndim)
    drift, g = sde.reverse(score_fn).sde(x, t)
    x_mean = x - drift * h
    z = randn(x.shape, generator, x.device, x.dtype)
    return x_mean + append_dims(g, x.ndim) * h.sqrt() * z, x_mean


def reverse_diffusion(score_fn, sde: SDE, x, t, t_next, generator=None):
    """Reverse diffusion (eq. 46): x_{i-1} = x_i - f_i + G_i^2 s + G_i z, with the exact forward
    transition x_t = m x_{t_next} + G z between the grid times (f_i = (m - 1) x, G_i^2 = v)."""
    m, v = sde.transition(t, t_next)
    f = (append_dims(m, x.ndim) - 1.0) * x
    G = append_dims(v.sqrt(), x.ndim)
    x_mean = x - f + G**2 * score_fn(x, t)
    z = randn(x.shape, generator, x.device, x.dtype)
    return x_mean + G * z, x_mean


def ancestral(score_fn, sde: SDE, x, t, t_next, generator=None):
    """Ancestral sampling: a draw from q(x_{t_next} | x_t, x0_hat), x0_hat the Tweedie estimate.

    With the transition x_t = m x_{t_next} + sqrt(v) z the posterior mean is (x + v s) / m and its
    variance v s(t_next)^2 / s(t)^2. For VE this is the SMLD ancestral sampler (eq. 47); for VP it is
    DDPM's sampler with the posterior variance beta~; it also holds for sub-VP, where the official
    code crashes.
    """
    m, v = sde.transition(t, t_next)
    score = score_fn(x, t)
    x_mean = (x + append_dims(v, x.ndim) * score) / append_dims(m, x.ndim)
    noise_std = torch.sqrt(v) * sde.std(t_next) / sde.std(t)
    z = randn(x.shape, generator, x.device, x.dtype)
    return x_mean + append_dims(noise_std, x.ndim) * z, x_mean


def no_predictor(score_fn, sde, x, t, t_next, generator=None):
    return x, x


PREDICTORS = {
    "euler_maruyama": euler_maruyama,
    "reverse_diffusion": reverse_diffusion,
    "ancestral": ancestral,
    "none": no_predictor,
}


def _alpha(sde: SDE, t, t_next):
    """alpha_i of Algorithms 4 / 5: 1 - beta_i = m^2 of the transition t_next -> t (VP, sub-VP);
    exactly 1 for VE (m = 1)."""
    return sde.transition(t, t_next)[0] ** 2


def langevin(score_fn, sde: SDE, x, t, t_next, snr, generator=None):
    """One Langevin MCMC step at t (Algorithms 4 and 5): eps_i = 2 alpha_i (r ||z|| / ||s||)^2.

    As in the paper's code the norms are averaged over the batch: per-sample norms are heavy-tailed
    in low dimension (||s|| -> 0 at a mode gives an unbounded step). The step size, and only it,
    therefore depends on the batch: so do the samples.
    """
    score = score_fn(x, t)
    z = randn(x.shape, generator, x.device, x.dtype)
    ratio = snr * batch_sum(z**2).sqrt().mean() / batch_sum(score**2).sqrt().mean()
    step = append_dims(2.0 * _alpha(sde, t, t_next) * ratio**2, x.ndim)
    x_mean = x + step * score
    return x_mean + torch.sqrt(2.0 * step) * z, x_mean


def ald(score_fn, sde: SDE, x, t, t_next, snr, generator=None):
    """Annealed Langevin dynamics of NCSN (Song & Ermon 2019) at t: eps_i = 2 alpha_i (r s(t))^2."""
    score = score_fn(x, t)
    z = randn(x.shape, generator, x.device, x.dtype)
    step = append_dims(2.0 * _alpha(sde, t, t_next) * (snr * sde.std(t)) ** 2, x.ndim)
    x_mean = x + step * score
    return x_mean + torch.sqrt(2.0 * step) * z, x_mean


def no_corrector(score_fn, sde, x, t, t_next, snr, generator=None):
    return x, x


CORRECTORS = {"langevin": langevin, "ald": ald, "none": no_corrector}
