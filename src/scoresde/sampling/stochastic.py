"""Fast samplers of the reverse-time SDE (eq. 6): noise is re-injected at every step, which corrects
part of a learned score's errors where the probability-flow ODE carries them to the end.

Every SDE here perturbs data as x(t) = a(t) x(0) + s(t) z; in the noise level sigma = s / a and
x_hat = x / a each of them is EDM's VE form x_hat = x(0) + sigma z (Karras et al. 2022, eq. 4 with
s(t) = 1), with the denoiser D(x_hat; sigma) = (x + s^2 score(x, t)) / a (Tweedie). The step
functions have the k-diffusion shape ``sample_<method>(score_fn, sde, x, times, generator=None,
**options) -> (x, x_mean)`` on an explicit grid in t; the noise comes from ``generator`` (one per
sample: sample i is the same whatever its batch), and no score is evaluated outside [times[-1], T].

- ``sample_edm``: EDM's stochastic sampler (Karras et al. 2022, Algorithm 2);
- ``sample_dpmpp_2m_sde``: SDE-DPM-Solver++(2M) (Lu et al. 2022b, sec. 5 and App. B; k-diffusion
  ``sample_dpmpp_2m_sde``, midpoint form; diffusers ``algorithm_type="sde-dpmsolver++"``);
- ``sample_dpmpp_3m_sde``: its third-order multistep extension (k-diffusion ``sample_dpmpp_3m_sde``).
"""

from __future__ import annotations

import math

import torch

from .. import checks
from ..sde import SDE
from ..utils import randn
from .common import check_range, noise_level
from .ode import grid_coefficients
from .schedules import log_snr_inverse


def _t_of_sigma(sde: SDE, sigma: float, like: torch.Tensor) -> tuple[torch.Tensor, float, float]:
    """(t, a(t), s(t)) at the noise level sigma, t as a tensor shaped like one grid time."""
    t = log_snr_inverse(sde, -torch.log(torch.tensor([sigma], dtype=torch.float64)))
    t = t.clamp(max=sde.T)
    return t.to(like), sde.mean_coeff(t).item(), sde.std(t).item()


def sample_edm(score_fn, sde: SDE, x, times, generator=None, S_churn: float = 10.0, S_tmin: float = 0.0,
               S_tmax: float = math.inf, S_noise: float = 1.0):
    """EDM's stochastic sampler (Karras et al. 2022, Algorithm 2) in sigma = s / a; 2 NFE per step.

    At sigma_i in [S_tmin, S_tmax] the noise level is raised to sigma_hat = (1 + gamma) sigma_i,
    gamma = min(S_churn / N, sqrt(2) - 1) (at most sigma(T)), by adding N(0, (sigma_hat^2 -
    sigma_i^2) S_noise^2) noise (lines 4-6); then one Heun step of the probability-flow ODE from
    sigma_hat to sigma_{i+1} (lines 7-10), its correction at every step since the grid ends at
    sigma_N > 0. The churn comes before each step: the last iterate is its own mean.
    """
    checks.start(sde, x, times, generator)
    S_churn = check_range("S_churn", S_churn, 0.0)
    S_noise = check_range("S_noise", S_noise, 0.0)
    S_tmin = check_range("S_tmin", S_tmin, 0.0, finite=False)
    S_tmax = check_range("S_tmax", S_tmax, S_tmin, finite=False)
    B, N = x.shape[0], len(times) - 1
    a, s, _ = grid_coefficients(sde, times)
    sigma = [si / ai for si, ai in zip(s, a, strict=True)]
    sigma_max = noise_level(sde, sde.T)
    gamma_max = min(S_churn / N, math.sqrt(2.0) - 1.0)
    x_hat = x / a[0]
    for i in range(N):
        gamma = gamma_max if S_tmin <= sigma[i] <= S_tmax else 0.0
        sig_hat = min(sigma[i] * (1.0 + gamma), sigma_max)
        t_hat, a_hat, s_hat = times[i], a[i], s[i]
        if sig_hat > sigma[i]:
            t_hat, a_hat, s_hat = _t_of_sigma(sde, sig_hat, times[i])
            z = randn(x.shape, generator, x.device, x.dtype)
            x_hat = x_hat + math.sqrt(sig_hat**2 - sigma[i] ** 2) * S_noise * z
        d = -s_hat * score_fn(a_hat * x_hat, t_hat.expand(B))  # (x_hat - D) / sigma_hat
        h = sigma[i + 1] - sig_hat
        x_next = x_hat + h * d
        d_next = -s[i + 1] * score_fn(a[i + 1] * x_next, times[i + 1].expand(B))
        x_hat = x_hat + (0.5 * h) * (d + d_next)
    x = a[-1] * x_hat
    return x, x


def _dpmpp_sde(score_fn, sde: SDE, x, times, generator, eta: float, s_noise: float, order: int):
    """SDE-DPM-Solver++ of multistep order 2 or 3 with data prediction x0 = (x + s^2 score) / a.

    With h = lambda_{i+1} - lambda_i and h_eta = (1 + eta) h, one step (in x = a x_hat) is
    x_{i+1} = (s_{i+1} / s_i) e^{-eta h} x_i + a_{i+1} [(1 - e^{-h_eta}) x0_i + corrections]
              + s_{i+1} sqrt(1 - e^{-2 eta h}) s_noise z,
    the corrections from the previous x0's as in k-diffusion (2M: midpoint; 3M: phi_2, phi_3).
    eta = 0 is DPM-Solver++(2M) / (3M) on the ODE. One NFE per step.
    """
    eta = check_range("eta", eta, 0.0, 1.0)
    s_noise = check_range("s_noise", s_noise, 0.0)
    B = x.shape[0]
    a, s, lam = grid_coefficients(sde, times)
    x0_1 = x0_2 = h_1 = h_2 = None
    x_mean = x
    for i in range(len(times) - 1):
        x0 = (x + s[i] ** 2 * score_fn(x, times[i].expand(B))) / a[i]
        h = lam[i + 1] - lam[i]
        h_eta = (1.0 + eta) * h
        phi_1 = -math.expm1(-h_eta)
        d = phi_1 * x0
        if order == 2 and x0_1 is not None:
            d = d + 0.5 * phi_1 * (h / h_1) * (x0 - x0_1)
        elif order == 3 and x0_1 is not None:
            phi_2 = 1.0 - phi_1 / h_eta
            r0 = h_1 / h
            d1_0 = (x0 - x0_1) / r0
            if x0_2 is None:
                d = d + phi_2 * d1_0
            else:
                r1 = h_2 / h
                d1_1 = (x0_1 - x0_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * (r0 / (r0 + r1))
                d2 = (d1_0 - d1_1) / (r0 + r1)
                d = d + phi_2 * d1 - (phi_2 / h_eta - 0.5) * d2
        x_mean = (s[i + 1] / s[i]) * math.exp(-eta * h) * x + a[i + 1] * d
        x = x_mean
        if eta > 0 and s_noise > 0:
            z = randn(x.shape, generator, x.device, x.dtype)
            x = x_mean + (s[i + 1] * math.sqrt(-math.expm1(-2.0 * eta * h)) * s_noise) * z
        x0_1, x0_2, h_1, h_2 = x0, x0_1, h, h_1
    return x, x_mean


def sample_dpmpp_2m_sde(score_fn, sde: SDE, x, times, generator=None, eta: float = 1.0,
                        s_noise: float = 1.0):
    """SDE-DPM-Solver++(2M) (Lu et al. 2022b; k-diffusion ``sample_dpmpp_2m_sde``, midpoint); eta in
    [0, 1] scales the injected noise (1: the reverse SDE, 0: the probability-flow ODE)."""
    checks.start(sde, x, times, generator)
    return _dpmpp_sde(score_fn, sde, x, times, generator, eta, s_noise, order=2)


def sample_dpmpp_3m_sde(score_fn, sde: SDE, x, times, generator=None, eta: float = 1.0,
                        s_noise: float = 1.0):
    """DPM-Solver++(3M) SDE (k-diffusion ``sample_dpmpp_3m_sde``): the 2M SDE step with a second
    difference of the data predictions; first and second order on the first two steps."""
    checks.start(sde, x, times, generator)
    return _dpmpp_sde(score_fn, sde, x, times, generator, eta, s_noise, order=3)
