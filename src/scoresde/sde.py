"""Forward SDEs of Song et al. (ICLR 2021), Section 3.4 and Appendix B.

Every SDE is ``dx = f(x, t) dt + g(t) dw`` (eq. 5) with an affine drift, so its perturbation kernel is
Gaussian, ``p_0t(x(t) | x(0)) = N(a(t) x(0), s(t)^2 I)`` with closed-form ``a`` and ``s``
(``marginal_prob``). The reverse-time SDE is eq. 6 and the probability-flow ODE eq. 13.

All methods take ``t`` of shape (B,) and any data rank: (B, D) vectors or (B, C, H, W) images.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from . import checks
from .utils import append_dims, batch_sum, randn

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class SDE:
    """Base class. Subclasses define ``sde``, ``mean_coeff`` (a(t)), ``std`` (s(t)) and the prior."""

    name = "sde"
    T = 1.0
    sampling_eps = 1e-3

    def __init__(self, N: int = 1000):
        self.N = checks.whole("N (the number of discretisation steps)", N, 1)

    # --- continuous-time quantities -------------------------------------------------------------
    def sde(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Drift f(x, t) and diffusion g(t) of eq. 5; g has shape (B,)."""
        raise NotImplementedError

    def mean_coeff(self, t: torch.Tensor) -> torch.Tensor:
        """a(t): the mean of p_0t(x(t) | x(0)) is a(t) x(0)."""
        raise NotImplementedError

    def std(self, t: torch.Tensor) -> torch.Tensor:
        """s(t): the standard deviation of p_0t(x(t) | x(0))."""
        raise NotImplementedError

    def marginal_prob(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean a(t) x(0) and std s(t) (shape (B,)) of the perturbation kernel p_0t."""
        return append_dims(self.mean_coeff(t), x.ndim) * x, self.std(t)

    def prior_std(self) -> float:
        return 1.0

    def prior_sampling(self, shape, generator=None, device=None, dtype=None) -> torch.Tensor:
        """A draw from p_T = N(0, prior_std^2 I)."""
        return self.prior_std() * randn(shape, generator, device=device, dtype=dtype)

    def prior_logp(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z; 0, prior_std^2 I) per sample, shape (B,)."""
        D = z[0].numel()
        var = self.prior_std() ** 2
        return -0.5 * D * math.log(2 * math.pi * var) - batch_sum(z**2) / (2 * var)

    def noise_condition(self, t: torch.Tensor) -> torch.Tensor:
        """The scalar fed to the score network (official code: 999 t for VP / sub-VP)."""
        return 999.0 * t

    # --- discretisation --------------------------------------------------------------------------
    def transition(self, t: torch.Tensor, t_prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact Gaussian transition from time ``t_prev`` to ``t > t_prev``: x_t = m x_{t_prev} + sqrt(v) z.

        For an affine SDE the marginals give m = a(t) / a(t_prev) and v = s(t)^2 - m^2 s(t_prev)^2.
        """
        m = self.mean_coeff(t) / self.mean_coeff(t_prev)
        v = self.std(t) ** 2 - (m * self.std(t_prev)) ** 2
        return m, torch.clamp(v, min=0.0)

    def discretize(self, x: torch.Tensor, t: torch.Tensor, dt: float | None = None):
        """Discrete forward step x_{i} = x_{i-1} + f_i + G_i z_i (Appendix E, eq. 44).

        The chain of SMLD / DDPM starts from the clean data x_0 (a = 1, s = 0), so a step whose
        previous time ``t - dt`` is <= 0 starts from it. With the default ``dt = T / N`` this is
        SMLD's geometric noise scales for VE (G_i^2 = sigma_i^2 - sigma_{i-1}^2, G_1^2 = sigma_1^2)
        and DDPM's chain for VP (f_i = (sqrt(1 - beta_i) - 1) x, G_i = sqrt(beta_i)). Samplers do
        not use it: they step with :meth:`transition` between the times of an explicit grid.
        """
        dt = self.T / self.N if dt is None else dt
        t_prev = t - dt
        at_data = t_prev <= 0
        safe = torch.where(at_data, t, t_prev)
        m, v = self.transition(t, safe)
        m = torch.where(at_data, self.mean_coeff(t), m)
        v = torch.where(at_data, self.std(t) ** 2, v)
        return (append_dims(m, x.ndim) - 1.0) * x, v.sqrt()

    def langevin_alpha(self, t: torch.Tensor, dt: float | None = None) -> torch.Tensor:
        """The alpha_i of Algorithm 5 (VP: 1 - beta_i); 1 for VE (Algorithm 4)."""
        return torch.ones_like(t)

    # --- reverse time ----------------------------------------------------------------------------
    def reverse(self, score_fn: ScoreFn, probability_flow: bool = False) -> ReverseSDE:
        """The reverse-time SDE (eq. 6) or, with ``probability_flow``, the ODE of eq. 13."""
        return ReverseSDE(self, score_fn, probability_flow)


class ReverseSDE:
    """dx = [f - g^2 score] dt + g dw_bar (eq. 6); probability flow: dx = [f - g^2 score / 2] dt."""

    def __init__(self, forward: SDE, score_fn: ScoreFn, probability_flow: bool = False):
        self.forward, self.score_fn, self.probability_flow = forward, score_fn, probability_flow
        self.T, self.N = forward.T, forward.N

    def sde(self, x, t):
        drift, g = self.forward.sde(x, t)
        weight = 0.5 if self.probability_flow else 1.0
        drift = drift - append_dims(g**2, x.ndim) * self.score_fn(x, t) * weight
        return drift, torch.zeros_like(g) if self.probability_flow else g

    def discretize(self, x, t, dt: float | None = None):
        """Reverse discretisation (eq. 46): f_rev = f - G^2 score, G_rev = G."""
        f, G = self.forward.discretize(x, t, dt)
        weight = 0.5 if self.probability_flow else 1.0
        f_rev = f - append_dims(G**2, x.ndim) * self.score_fn(x, t) * weight
        return f_rev, torch.zeros_like(G) if self.probability_flow else G


class VESDE(SDE):
    """Variance exploding SDE (eq. 9): sigma(t) = sigma_min (sigma_max / sigma_min)^t,
    dx = sigma(t) sqrt(2 log(sigma_max / sigma_min)) dw.

    Following the paper, s(t) = sigma(t): the kernel is exact for data already carrying
    N(0, sigma_min^2) noise, which is negligible at sigma_min = 0.01.
    """

    name = "ve"
    sampling_eps = 1e-5

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, N: int = 1000):
        super().__init__(N)
        self.sigma_min, self.sigma_max = checks.positive_range("sigma_min", sigma_min, "sigma_max",
                                                               sigma_max, "VE SDE")
        self.log_ratio = math.log(self.sigma_max / self.sigma_min)

    def sigma(self, t):
        return self.sigma_min * torch.exp(t * self.log_ratio)

    def sde(self, x, t):
        return torch.zeros_like(x), self.sigma(t) * math.sqrt(2 * self.log_ratio)

    def mean_coeff(self, t):
        return torch.ones_like(t)

    def std(self, t):
        return self.sigma(t)

    def prior_std(self):
        return self.sigma_max

    def noise_condition(self, t):
        """NCSN++ conditions on log sigma(t)."""
        return torch.log(self.sigma(t))


class VPSDE(SDE):
    """Variance preserving SDE (eq. 11): dx = -beta(t) x / 2 dt + sqrt(beta(t)) dw,
    beta(t) = beta_min + t (beta_max - beta_min)."""

    name = "vp"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, N: int = 1000):
        super().__init__(N)
        self.beta_min, self.beta_max = checks.positive_range("beta_min", beta_min, "beta_max",
                                                             beta_max, f"{self.name} SDE")

    def beta(self, t):
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def log_mean_coeff(self, t):
        """log a(t) = -int_0^t beta(s) ds / 2 (eq. 29)."""
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def sde(self, x, t):
        beta = self.beta(t)
        return -0.5 * append_dims(beta, x.ndim) * x, beta.sqrt()

    def mean_coeff(self, t):
        return torch.exp(self.log_mean_coeff(t))

    def std(self, t):
        return torch.sqrt(-torch.expm1(2.0 * self.log_mean_coeff(t)))

    def langevin_alpha(self, t, dt=None):
        """alpha_i = 1 - beta_i of the DDPM chain at step size dt (Algorithm 5)."""
        dt = self.T / self.N if dt is None else dt
        s = torch.clamp(t - dt, min=0.0)
        return torch.exp(2.0 * (self.log_mean_coeff(t) - self.log_mean_coeff(s)))


class SubVPSDE(VPSDE):
    """Sub-VP SDE (eq. 12): dx = -beta(t) x / 2 dt + sqrt(beta(t) (1 - e^{-2 int_0^t beta})) dw.
    Its kernel has mean a(t) x(0) as VP and std 1 - a(t)^2 (eq. 29), below the VP std."""

    name = "subvp"

    def sde(self, x, t):
        beta = self.beta(t)
        discount = -torch.expm1(4.0 * self.log_mean_coeff(t))
        return -0.5 * append_dims(beta, x.ndim) * x, torch.sqrt(beta * discount)

    def std(self, t):
        return -torch.expm1(2.0 * self.log_mean_coeff(t))


SDES = {"ve": VESDE, "vp": VPSDE, "subvp": SubVPSDE}


def make_sde(name: str, **params) -> SDE:
    """Build an SDE by its short name (``ve``, ``vp``, ``subvp``) with its own parameters."""
    import inspect

    cls = SDES[checks.choice("name", name, SDES, "SDE")]
    checks.options(name, params, tuple(inspect.signature(cls).parameters), kind="SDE")
    return cls(**params)
