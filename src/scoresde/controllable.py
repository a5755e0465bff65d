"""Controllable generation (Song et al. 2021, section 5 and Appendix I).

* :func:`conditional_score`: the score of p_t(x | y) = s(x, t) + grad_x log p_t(y | x) (eq. 14,
  App. I.1), e.g. with a noise-conditional classifier; it is an ordinary ``score_fn``, so
  ``pc_sample`` and ``ode_sample`` draw class-conditional samples unchanged.
* :func:`classifier_free_score`: classifier-free guidance (Ho & Salimans 2022) with a
  class-conditional score s(x, t | y) that also knows "no label": (1 + w) s(x, t | y) - w s(x, t),
  the score of the tilted density p_t(x | y)^(1 + w) p_t(x)^(-w) at every t (up to its
  normalisation); an ordinary ``score_fn`` too. Like classifier guidance with scale 1 + w it
  sharpens each p_t towards the class; the samples it ends at are not the tilted density at t = 0
  (the tilted p_t are not the marginals of one diffusion), but a Langevin chain at a fixed t
  samples that t's tilted density exactly as its step goes to zero.
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
  draw is exact as the number of particles grows (up to the time discretisation and eps). It is
  ``scoresde.inverse.particle_filter`` (``solve_inverse``'s ``smc``) with the pixels as coordinates.
* :func:`colorize`: imputation in the decoupled colour space of App. I.3: an orthonormal 3x3 matrix
  whose first column is 1/sqrt(3) maps RGB to (grey, two chroma channels); the grey channel is
  observed.

The time grid is ``T = t_0 > t_1 > ... > t_steps = eps`` (``sampling.time_uniform``); every step goes
from t_i to t_{i+1} with a predictor / corrector of ``scoresde.sampling``, and ``denoise`` ends
with one Tweedie step at eps (E[x(0) | x(eps)]).
"""

from __future__ import annotations

import math

import torch

from . import checks
from .inverse import gaussian_kernel, particle_filter, systematic_resample
from .sampling import CORRECTORS, PREDICTORS, time_uniform
from .sampling.common import (
    check_args,
    check_finite,
    check_int,
    check_options,
    check_range,
    final_tweedie,
    lookup,
)
from .sde import SDE
from .utils import append_dims, randn

__all__ = ["METHODS", "SMC_PREDICTORS", "check_mask", "classifier_free_score", "colorize",
           "colour_matrix", "conditional_score",
           "couple", "decouple", "gaussian_kernel", "inpaint", "repaint_schedule",
           "systematic_resample"]

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
    checks.function("score_fn", score_fn)
    checks.function("log_prob_fn", log_prob_fn)
    scale = checks.number("scale", scale)

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


def classifier_free_score(class_score_fn, labels, weight: float, null_label: int):
    """(1 + w) s(x, t | y) - w s(x, t): classifier-free guidance (Ho & Salimans 2022, eq. 6 in
    score form) with guidance weight ``weight`` = w >= 0 (w = 0: the plain conditional score).

    ``class_score_fn(x, t, labels) -> score`` is a class-conditional score whose label
    ``null_label`` means "no label" (the unconditional score s(x, t)), e.g.
    ``losses.get_class_score_fn`` of a network trained with label dropout. ``labels``: one class
    for the whole batch or one per sample. For w > 0 the conditional and the unconditional score
    are one call on the doubled batch (2B), so a network sees one larger batch per step.
    """
    checks.function("class_score_fn", class_score_fn)
    weight = checks.number("weight", weight, 0.0)
    null_label = checks.whole("null_label", null_label, 1)
    labels = torch.as_tensor(labels)
    if labels.numel() == 0 or int(labels.min()) < 0 or int(labels.max()) >= null_label:
        raise ValueError(f"class label(s) {labels.reshape(-1).tolist()[:8]} outside the classes "
                         f"0..{null_label - 1} (label {null_label} means no label)")

    def score(x, t):
        B = x.shape[0]
        y = labels.to(x.device).long().reshape(-1)
        y = y.expand(B) if y.numel() == 1 else y
        t = t.reshape(-1).expand(B) if t.numel() == 1 else t
        if weight == 0:
            return class_score_fn(x, t, y)
        both = class_score_fn(torch.cat([x, x]), torch.cat([t, t]),
                              torch.cat([y, torch.full_like(y, null_label)]))
        cond, uncond = both[:B], both[B:]
        return cond + weight * (cond - uncond)

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


def _observed_draw(sde: SDE, y, t, generator):
    """A draw of y(t) ~ p_0t(y(t) | y) = N(a(t) y, s(t)^2 I), and its mean."""
    mean, std = sde.marginal_prob(y, t)
    return mean + append_dims(std, y.ndim) * randn(y.shape, generator, y.device, y.dtype), mean


def _check_inpaint(score_fn, sde, y, mask, steps, eps, method, predictor, corrector, snr, denoise,
                   generator, options=None):
    """Every argument of :func:`inpaint`, before its first score evaluation; ``(mask, eps)``."""
    checks.function("score_fn", score_fn)
    checks.sde(sde)
    lookup(dict.fromkeys(METHODS), method, "inpainting method")
    allowed = {"replace": (), "repaint": ("jump", "resample"), "smc": ("particles", "ess_threshold")}
    check_options(method, options or {}, allowed[method])
    eps = sde.sampling_eps if eps is None else eps
    check_args(sde, steps, eps)
    eps = float(eps)
    lookup(PREDICTORS, predictor, "predictor")
    lookup(CORRECTORS, corrector, "corrector")
    check_range("snr", snr, 0.0)
    checks.flag("denoise", denoise)
    checks.tensor("y", y, min_rank=2, what="(B, ...) of observations")
    checks.generator("generator", generator, y.shape[0], y.device)
    for name in ("jump", "resample", "particles"):
        if name in (options or {}):
            check_int(name, options[name], 1)
    if "ess_threshold" in (options or {}):
        checks.number("ess_threshold", options["ess_threshold"], 0.0, 1.0)
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
    mask, eps = _check_inpaint(score_fn, sde, y, mask, steps, eps, method, predictor, corrector, snr,
                               denoise, generator, method_options)
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
    return check_finite(mask * y + (1 - mask) * x, "inpaint"), nfe


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
    predict = lookup(PREDICTORS, predictor, "predictor")
    correct = lookup(CORRECTORS, corrector, "corrector")
    B = y.shape[0]
    times = time_uniform(sde, steps, eps, y.device, y.dtype)
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
                x, _ = correct(score_fn, sde, x, t, t_next, snr, generator)
                x, nfe = observe(x, t), nfe + 1
            if predictor != "none":
                x, _ = predict(score_fn, sde, x, t, t_next, generator)
                nfe += 1
            x = observe(x, t_next)
        else:  # RePaint: diffuse forward from t to t_next > t by the exact kernel
            m, v = sde.transition(t_next, t)
            z = randn(x.shape, generator, x.device, x.dtype)
            x = append_dims(m, x.ndim) * x + append_dims(v.sqrt(), x.ndim) * z
            x = observe(x, t_next)
    if denoise:
        x, nfe = final_tweedie(score_fn, sde, x, eps), nfe + 1
    return x, nfe


# --- SMC (MCGDiff, noiseless) ---------------------------------------------------------------------


def _smc(score_fn, sde, y, mask, steps, predictor, eps, denoise, generator, particles=16,
         ess_threshold=0.5):
    """MCGDiff (Cardoso et al. 2024), noiseless, with the pixels as coordinates: the particle
    filter of ``scoresde.inverse`` with potentials g_t(x) = N(x_obs; a(t) y, s(t)^2 I) on the
    observed entries (the kernel of y(t), what ``replace`` draws from); observed entries are
    drawn from the backward kernel times g_{t_next}, missing ones from the kernel. ``particles``
    per observation; the result is one particle drawn by weight."""
    if predictor not in SMC_PREDICTORS:
        raise ValueError(f"smc needs predictor {' or '.join(SMC_PREDICTORS)}, got {predictor!r}")
    K = int(particles)
    if particles != K or K < 1 or not 0 <= ess_threshold <= 1:
        raise ValueError(f"smc needs an integer particles >= 1 and 0 <= ess_threshold <= 1, got "
                         f"{particles}, {ess_threshold}")
    return particle_filter(score_fn, sde, y.shape, y.flatten(1), 0.0, steps, eps, predictor,
                           weight=mask.flatten(1), denoise=denoise, generator=generator,
                           particles=K, ess_threshold=ess_threshold)


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
    checks.function("score_fn", score_fn)
    if not isinstance(gray, torch.Tensor) or gray.ndim != 4 or gray.shape[1] != 1:
        raise ValueError(f"gray must be (B, 1, H, W), got {checks.show(gray)}")
    checks.tensor("gray", gray, rank=4, what="(B, 1, H, W)")
    y = torch.zeros(gray.shape[0], 3, *gray.shape[2:], dtype=gray.dtype, device=gray.device)
    y[:, :1] = math.sqrt(3.0) * gray
    mask = torch.zeros_like(y)
    mask[:, :1] = 1.0

    def decoupled_score(u, t):
        return decouple(score_fn(couple(u), t))

    u, nfe = inpaint(decoupled_score, sde, y, mask, steps, method=method, **inpaint_options)
    return couple(u), nfe
