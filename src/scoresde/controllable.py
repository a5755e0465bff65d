"""Controllable generation (Song et al. 2021, section 5 and Appendix I).

* :func:`conditional_score`: the score of p_t(x | y) = s(x, t) + grad_x log p_t(y | x) (eq. 14,
  App. I.1), e.g. with a noise-conditional classifier; it is an ordinary ``score_fn``, so
  ``pc_sample`` and ``ode_sample`` draw class-conditional samples unchanged.
* :func:`inpaint`: imputation of the entries where ``mask == 0`` given ``y`` where ``mask == 1``.
  ``replace`` is the paper's method (App. I.2): after every predictor and corrector update the
  observed entries are replaced by a draw from the perturbation kernel p_0t(y(t) | y). It
  approximates p_t(x(t) | y) by p_t(x(t) | y(t)) and is biased even with the exact score (measured in
  ``benchmarks/controllable_bias.py``). ``repaint`` adds RePaint's resampling (Lugmayr et al.,
  CVPR 2022): after every ``jump`` steps the state is diffused forward ``jump`` steps by the exact
  forward kernel and the steps are redone, ``resample`` times in all. ``smc`` is the particle method
  of MCGDiff (Cardoso, Janati, Le Corff, Moulines, "Monte Carlo guided diffusion for Bayesian linear
  inverse problems", ICLR 2024), noiseless case: the same kernel of y(t) acts as a potential on the
  observed entries, the observed part of each particle is drawn from the product of the backward
  kernel and that potential, and the particles are reweighted and resampled; the potentials
  telescope, so the particles target the sampler's own chain conditioned on x(0)_obs = y and the
  draw is exact as the number of particles grows (up to the time discretisation and eps).
* :func:`colorize`: imputation in the decoupled colour space of App. I.3: an orthonormal 3x3 matrix
  whose first column is 1/sqrt(3) maps RGB to (grey, two chroma channels); the grey channel is
  observed.

The time grid is ``T = t_0 > t_1 > ... > t_steps = eps`` (uniform); every step goes from t_i to
t_{i+1}, and ``denoise`` ends with one Tweedie step at eps (E[x(0) | x(eps)]).
"""

from __future__ import annotations

import inspect
import math

import torch

from .sde import SDE
from .utils import append_dims, batch_sum, randn

METHODS = ("replace", "repaint", "smc")
SMC_PREDICTORS = ("reverse_diffusion", "ancestral")


# --- class-conditional sampling ----------------------------------------------------------------


def conditional_score(score_fn, log_prob_fn, scale: float = 1.0):
    """grad_x log p_t(x | y) = s(x, t) + scale * grad_x log p_t(y | x) (eq. 14 / App. I.1).

    ``log_prob_fn(x, t) -> (B,)`` is log p_t(y | x) (e.g. a noise-conditional classifier's log
    softmax at the label). ``scale`` = 1 is Bayes' rule; other values are classifier guidance
    (Dhariwal & Nichol 2021) and sample p(x) p(y | x)^scale. The gradient is taken with autograd,
    also inside ``torch.no_grad()``.
    """

    def score(x, t):
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            logp = log_prob_fn(xg, t)
            if logp.shape != (x.shape[0],):
                raise ValueError(f"log_prob_fn must return shape ({x.shape[0]},) = (B,), got "
                                 f"{tuple(logp.shape)}")
            (grad,) = torch.autograd.grad(logp.sum(), xg)
        return score_fn(x, t) + scale * grad.to(x.dtype)

    return score


# --- helpers -------------------------------------------------------------------------------------


def check_mask(y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mask as y's dtype; ValueError unless it has y's shape and holds only 0 and 1."""
    if not isinstance(mask, torch.Tensor) or mask.shape != y.shape:
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"mask must have the observation's shape {tuple(y.shape)}, got {shape}; "
                         "give one 0/1 entry per entry of y (1 = observed)")
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError("mask must hold only 0 (missing) and 1 (observed); got other values")
    return mask.to(device=y.device, dtype=y.dtype)


def time_grid(sde: SDE, steps: int, eps: float, device=None, dtype=None) -> torch.Tensor:
    """The decreasing grid T = t_0 > ... > t_steps = eps, uniform in t (steps + 1 times)."""
    return torch.linspace(sde.T, eps, int(steps) + 1, device=device, dtype=dtype)


def _call_step(fn, score_fn, sde, x, t, t_next, *extra, generator=None):
    """One predictor / corrector step from t to t_next, whichever calling convention
    ``scoresde.sampling`` uses: ``(..., t, t_next, ...)`` or the older ``(..., t, dt, ...)``."""
    params = inspect.signature(fn).parameters
    if "t_next" in params:
        return fn(score_fn, sde, x, t, t_next, *extra, generator=generator)
    return fn(score_fn, sde, x, t, float(t[0] - t_next[0]), *extra, generator=generator)


def _transition(sde: SDE, t, t_prev):
    """The exact forward transition from t_prev to t > t_prev: x_t = m x_{t_prev} + sqrt(v) z with
    m = a(t) / a(t_prev), v = s(t)^2 - m^2 s(t_prev)^2 (from the marginals; both times > 0)."""
    m = sde.mean_coeff(t) / sde.mean_coeff(t_prev)
    return m, torch.clamp(sde.std(t) ** 2 - (m * sde.std(t_prev)) ** 2, min=0.0)


def _observed_draw(sde: SDE, y, t, generator):
    """A draw of y(t) ~ p_0t(y(t) | y) = N(a(t) y, s(t)^2 I), and its mean."""
    mean, std = sde.marginal_prob(y, t)
    return mean + append_dims(std, y.ndim) * randn(y.shape, generator, y.device, y.dtype), mean


def _tweedie(score_fn, sde, x, t):
    """E[x(0) | x(t)] = (x + s(t)^2 score) / a(t)."""
    std = append_dims(sde.std(t), x.ndim)
    return (x + std**2 * score_fn(x, t)) / append_dims(sde.mean_coeff(t), x.ndim)


def _check_common(sde, y, mask, steps, eps, method):
    if method not in METHODS:
        raise ValueError(f"unknown inpainting method {method!r}; choose one of {', '.join(METHODS)}")
    if int(steps) < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    eps = sde.sampling_eps if eps is None else float(eps)
    if not 0 < eps < sde.T:
        raise ValueError(f"eps must lie in (0, T={sde.T}), got {eps}")
    return check_mask(y, mask), eps


# --- inpainting ----------------------------------------------------------------------------------


def inpaint(score_fn, sde: SDE, y: torch.Tensor, mask: torch.Tensor, steps: int,
            method: str = "replace", predictor: str = "reverse_diffusion",
            corrector: str = "langevin", snr: float = 0.16, eps: float | None = None,
            denoise: bool = True, generator=None, **method_options):
    """Sample x ~ p(x | x_obs = y): ``mask`` has y's shape, 1 = observed. Returns ``(x, nfe)``.

    The result equals ``y`` exactly where ``mask == 1``. ``nfe`` counts score evaluations per
    sample (per particle for ``smc``). Options: ``repaint``: ``jump`` (default 5), ``resample``
    (default 2; 1 = ``replace``); ``smc``: ``particles`` (default 16), ``ess_threshold``
    (default 0.5; resample when ESS < threshold * particles); ``smc`` uses no corrector and needs
    ``predictor`` ``reverse_diffusion`` or ``ancestral`` (its Gaussian backward kernel).
    """
    mask, eps = _check_common(sde, y, mask, steps, eps, method)
    if method == "smc":
        x, nfe = _smc(score_fn, sde, y, mask, int(steps), predictor, eps, denoise, generator,
                      **method_options)
    else:
        if method == "replace":
            if method_options:
                raise ValueError(f"replace takes no options, got {sorted(method_options)}")
            jump, resample = 1, 1
        else:
            unknown = set(method_options) - {"jump", "resample"}
            if unknown:
                raise ValueError(f"repaint options are jump and resample, got {sorted(unknown)}")
            jump = int(method_options.get("jump", 5))
            resample = int(method_options.get("resample", 2))
        x, nfe = _replace(score_fn, sde, y, mask, int(steps), predictor, corrector, snr, eps,
                          denoise, generator, jump, resample)
    x = mask * y + (1 - mask) * x
    if not torch.isfinite(x).all():
        raise FloatingPointError("inpaint produced non-finite values (NaN/Inf); the score "
                                 "network or the step size diverged")
    return x, nfe


def repaint_schedule(steps: int, jump: int, resample: int) -> list[int]:
    """Grid indices visited by RePaint (Lugmayr et al. 2022, its ``get_schedule_jump``).

    Starting at index 0 (t = T) the walk steps towards ``steps`` (t = eps); on reaching an index
    ``i`` that is a multiple of ``jump`` (0 < i < steps) it goes back ``jump`` indices (forward
    diffusion) and redoes those steps, ``resample - 1`` times. ``jump = 1, resample = 1`` visits
    0, 1, ..., steps (plain replacement).
    """
    if jump < 1 or resample < 1:
        raise ValueError(f"repaint needs jump >= 1 and resample >= 1, got {jump}, {resample}")
    jumps = {i: resample - 1 for i in range(jump, steps, jump)}
    path, i = [0], 0
    while i < steps:
        i += 1
        path.append(i)
        if jumps.get(i, 0) > 0:
            jumps[i] -= 1
            for _ in range(jump):
                i -= 1
                path.append(i)
    return path


def _replace(score_fn, sde, y, mask, steps, predictor, corrector, snr, eps, denoise, generator,
             jump, resample):
    """The paper's imputation (App. I.2; RePaint's walk when jump/resample > 1)."""
    from .sampling import CORRECTORS, PREDICTORS

    if predictor not in PREDICTORS or corrector not in CORRECTORS:
        raise ValueError(f"unknown predictor {predictor!r} or corrector {corrector!r}; choose from "
                         f"{', '.join(PREDICTORS)} and {', '.join(CORRECTORS)}")
    predict, correct = PREDICTORS[predictor], CORRECTORS[corrector]
    B = y.shape[0]
    times = time_grid(sde, steps, eps, y.device, y.dtype)
    x = sde.prior_sampling(y.shape, generator, device=y.device, dtype=y.dtype)
    nfe = 0

    def observe(x, t):
        y_t, _ = _observed_draw(sde, y, t, generator)
        return mask * y_t + (1 - mask) * x

    x = observe(x, times[0].expand(B))
    path = repaint_schedule(steps, jump, resample)
    for i, j in zip(path[:-1], path[1:], strict=True):
        t, t_next = times[i].expand(B), times[j].expand(B)
        if j > i:  # a reverse step: corrector at t, predictor t -> t_next, each then replaced
            if corrector != "none":
                x, _ = _call_step(correct, score_fn, sde, x, t, t_next, snr, generator=generator)
                x, nfe = observe(x, t), nfe + 1
            if predictor != "none":
                x, _ = _call_step(predict, score_fn, sde, x, t, t_next, generator=generator)
                nfe += 1
            x = observe(x, t_next)
        else:  # RePaint: diffuse forward from t to t_next > t by the exact kernel
            m, v = _transition(sde, t_next, t)
            z = randn(x.shape, generator, x.device, x.dtype)
            x = append_dims(m, x.ndim) * x + append_dims(v.sqrt(), x.ndim) * z
            x = observe(x, t_next)
    if denoise:
        x, nfe = _tweedie(score_fn, sde, x, times[-1].expand(B)), nfe + 1
    return x, nfe


# --- SMC (MCGDiff, noiseless) ---------------------------------------------------------------------


def gaussian_kernel(score_fn, sde: SDE, x, t, t_next, predictor: str = "reverse_diffusion"):
    """The backward kernel x(t_next) ~ N(mean, std^2 I) of a Gaussian predictor; (mean, std (B,)).

    ``reverse_diffusion`` (eq. 46): mean = x - f + G^2 s, std = G with the exact forward transition
    from t_next to t; ``ancestral``: the posterior q(x(t_next) | x(t), x0_hat) of the Tweedie estimate.
    """
    m, v = _transition(sde, t, t_next)
    score = score_fn(x, t)
    if predictor == "reverse_diffusion":
        mean = x - (append_dims(m, x.ndim) - 1.0) * x + append_dims(v, x.ndim) * score
        return mean, v.sqrt()
    if predictor == "ancestral":
        var_t = sde.std(t) ** 2
        var_prev = torch.clamp((var_t - v) / m**2, min=0.0)
        mean = (x + append_dims(v, x.ndim) * score) / append_dims(m, x.ndim)
        return mean, torch.sqrt(v * var_prev / var_t)
    raise ValueError(f"smc needs a Gaussian predictor: {', '.join(SMC_PREDICTORS)}; got {predictor!r}")


def _log_normal(x, mean, var, mask):
    """sum over observed entries of log N(x; mean, var) (var of shape (B,)), shape (B,)."""
    var = append_dims(var, x.ndim)
    return batch_sum(mask * (-0.5 * (x - mean) ** 2 / var - 0.5 * torch.log(2 * math.pi * var)))


def systematic_resample(log_w: torch.Tensor, generator=None) -> torch.Tensor:
    """Indices (B, K) drawn by systematic resampling from each row's weights exp(log_w) (B, K)."""
    B, K = log_w.shape
    w = torch.softmax(log_w, dim=1)
    cdf = torch.cumsum(w, dim=1)
    cdf[:, -1] = 1.0
    u = torch.rand((B, 1), generator=generator, device=log_w.device, dtype=log_w.dtype)
    points = (u + torch.arange(K, device=log_w.device, dtype=log_w.dtype)) / K
    return torch.searchsorted(cdf, points).clamp(max=K - 1)


def _smc(score_fn, sde, y, mask, steps, predictor, eps, denoise, generator, particles=16,
         ess_threshold=0.5):
    """MCGDiff (Cardoso et al. 2024, noiseless observation), for any SDE of this library.

    Potentials g_t(x) = N(x_obs; a(t) y, s(t)^2 I) (the kernel of y(t), what ``replace`` draws
    from). At each step t -> t_next, with the backward kernel N(mu, sigma^2 I):
    missing entries ~ N(mu, sigma^2); observed entries ~ N(mu, sigma^2) g_{t_next}, i.e.
    N((mu s^2 + a y sigma^2) / (s^2 + sigma^2), sigma^2 s^2 / (s^2 + sigma^2)); log-weights
    += log N(a y; mu_obs, sigma^2 + s^2) - log g_t(x(t)). The initial weights are g_T(x(T)).
    Per observation, ``particles`` particles; the result is one particle drawn by weight.
    """
    if isinstance(generator, (list, tuple)):
        raise ValueError("smc takes one torch.Generator for all particles, not a list")
    if predictor not in SMC_PREDICTORS:
        raise ValueError(f"smc needs predictor {' or '.join(SMC_PREDICTORS)}, got {predictor!r}")
    K = int(particles)
    if K < 1 or not 0 <= ess_threshold <= 1:
        raise ValueError(f"smc needs particles >= 1 and 0 <= ess_threshold <= 1, got {particles}, "
                         f"{ess_threshold}")
    B = y.shape[0]
    yk, mk = y.repeat_interleave(K, dim=0), mask.repeat_interleave(K, dim=0)
    N = B * K
    times = time_grid(sde, steps, eps, y.device, y.dtype)
    x = sde.prior_sampling(yk.shape, generator, device=y.device, dtype=y.dtype)
    t = times[0].expand(N)
    log_w = _log_normal(x, append_dims(sde.mean_coeff(t), x.ndim) * yk, sde.std(t) ** 2, mk)
    nfe = 0
    for i in range(steps):
        t, t_next = times[i].expand(N), times[i + 1].expand(N)
        if K > 1:  # resample where the effective sample size fell below the threshold
            lw = log_w.view(B, K)
            ess = 1.0 / (torch.softmax(lw, dim=1) ** 2).sum(1)
            low = ess < ess_threshold * K
            if bool(low.any()):
                idx = systematic_resample(lw, generator)
                idx = torch.where(low[:, None], idx, torch.arange(K, device=y.device).expand(B, K))
                flat = (idx + K * torch.arange(B, device=y.device)[:, None]).reshape(-1)
                x = x[flat]
                log_w = torch.where(low[:, None], torch.zeros_like(lw), lw).reshape(-1)
        mu, sigma = gaussian_kernel(score_fn, sde, x, t, t_next, predictor)
        nfe += 1
        a_next, s_next = sde.mean_coeff(t_next), sde.std(t_next)
        target = append_dims(a_next, x.ndim) * yk
        var_k, var_g = sigma**2, s_next**2
        obs_mean = (mu * append_dims(var_g, x.ndim) + target * append_dims(var_k, x.ndim)) / \
            append_dims(var_k + var_g, x.ndim)
        obs_std = torch.sqrt(var_k * var_g / (var_k + var_g))
        mean = mk * obs_mean + (1 - mk) * mu
        std = mk * append_dims(obs_std, x.ndim) + (1 - mk) * append_dims(sigma, x.ndim)
        a_cur = append_dims(sde.mean_coeff(t), x.ndim)
        log_w = log_w + _log_normal(target, mu, var_k + var_g, mk) - \
            _log_normal(x, a_cur * yk, sde.std(t) ** 2, mk)
        x = mean + std * randn(x.shape, generator, x.device, x.dtype)
    if denoise:
        x, nfe = _tweedie(score_fn, sde, x, times[-1].expand(N)), nfe + 1
    choice = torch.multinomial(torch.softmax(log_w.view(B, K), dim=1), 1, generator=generator)
    return x.view(B, K, *x.shape[1:])[torch.arange(B, device=y.device), choice[:, 0]], nfe


# --- colorization ----------------------------------------------------------------------------------


def colour_matrix(dtype=torch.float64, device=None) -> torch.Tensor:
    """An orthonormal 3x3 matrix M whose first column is (1, 1, 1) / sqrt(3) (App. I.3).

    Columns: grey (1, 1, 1)/sqrt(3), (-2, 1, 1)/sqrt(6), (0, 1, -1)/sqrt(2). ``decouple`` maps an
    RGB pixel x to M^T x: its first channel is sqrt(3) times the mean of R, G and B.
    """
    r3, r6, r2 = math.sqrt(3.0), math.sqrt(6.0), math.sqrt(2.0)
    return torch.tensor([[1 / r3, -2 / r6, 0.0], [1 / r3, 1 / r6, 1 / r2], [1 / r3, 1 / r6, -1 / r2]],
                        dtype=dtype, device=device)


def decouple(x: torch.Tensor) -> torch.Tensor:
    """RGB (B, 3, H, W) -> decoupled channels M^T x per pixel."""
    M = colour_matrix(x.dtype, x.device)
    return torch.einsum("bihw,ij->bjhw", x, M)


def couple(u: torch.Tensor) -> torch.Tensor:
    """Decoupled channels -> RGB: M u (M orthonormal, so M^-1 = M^T)."""
    M = colour_matrix(u.dtype, u.device)
    return torch.einsum("bjhw,ij->bihw", u, M)


def colorize(score_fn, sde: SDE, gray: torch.Tensor, steps: int, method: str = "replace",
             **inpaint_options):
    """Colour a grey image: RGB x with (R + G + B) / 3 = ``gray``; returns ``(x, nfe)``.

    ``gray`` is (B, 1, H, W) in the model's space (the value each of R, G and B would have).
    Imputation runs in the decoupled space, where the score is M^T s(M u, t) (the SDEs here are
    isotropic, so the decoupled process is the same SDE), with the grey channel observed.
    """
    if gray.ndim != 4 or gray.shape[1] != 1:
        raise ValueError(f"gray must be (B, 1, H, W), got {tuple(gray.shape)}")
    y = torch.zeros(gray.shape[0], 3, *gray.shape[2:], dtype=gray.dtype, device=gray.device)
    y[:, :1] = math.sqrt(3.0) * gray
    mask = torch.zeros_like(y)
    mask[:, :1] = 1.0

    def decoupled_score(u, t):
        return decouple(score_fn(couple(u), t))

    u, nfe = inpaint(decoupled_score, sde, y, mask, steps, method=method, **inpaint_options)
    return couple(u), nfe
