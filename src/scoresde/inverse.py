"""Linear inverse problems with a score prior: draw x ~ p(x | y) for y = A x + sigma_y n, n ~ N(0, I).

Every method walks the uniform grid T = t_0 > t_1 > ... > t_steps = eps (``sampling.time_uniform``)
with a Gaussian predictor of ``scoresde.sampling`` (``reverse_diffusion``, eq. 46, or
``ancestral``), one score evaluation per step, and ends with one Tweedie step E[x(0) | x(eps)].
Write x(t) = a(t) x(0) + s(t) z for the perturbation kernel and x0(x_t) = (x_t + s^2 s_theta(x_t, t)) / a
for Tweedie's estimate.

* ``dps``, diffusion posterior sampling (Chung et al., ICLR 2023, Algorithm 1): after the
  unconditional step, x_{i+1} <- x_{i+1} - zeta_i grad_{x_i} ||y - A x0(x_i)||^2 with the paper's
  step size zeta_i = zeta / ||y - A x0(x_i)|| (its App. C); ``scale`` = zeta.
* ``pigdm``, pseudoinverse-guided diffusion (Song, Vahdat, Mardani, Kautz, ICLR 2023): p(x(0) | x_t)
  ~ N(x0, r_t^2 I) with r_t^2 = sigma_t^2 / (1 + sigma_t^2), sigma_t = s / a (unit data variance),
  so p(y | x_t) ~ N(A x0, r_t^2 A A^T + sigma_y^2 I) and
  grad log p(y | x_t) ~ (d x0 / d x_t)^T A^T (r_t^2 A A^T + sigma_y^2 I)^-1 (y - A x0),
  a vector-Jacobian product through the score, added (times ``scale``) to the score of the step
  (``jacobian="gaussian"``: d x0 / d x_t replaced by its value a r_t^2 / s^2 in the Gaussian model).
* ``smc``: MCGDiff (Cardoso, Janati, Le Corff, Moulines, ICLR 2024, Algorithm 1) in the SVD basis
  A = U diag(S) V^T: the forward noise is isotropic, so the coordinates c = V^T x diffuse like x and
  the measurement reads ybar = U^T y / S = c(0) + sigmabar n, sigmabar_j = sigma_y / S_j. Potentials
  g_t(x) = prod_j N(a(t) ybar_j; c_j, s(t)^2 + a(t)^2 sigmabar_j^2), equal to the likelihood p(y | x)
  at t = 0 (MCGDiff proper switches each noisy coordinate's potential at the time where the
  diffusion noise matches sigmabar_j; with this potential the targets telescope the same way).
  Proposal: given the backward kernel N(mu, sigma^2 I) of the predictor, the coordinates c are drawn
  from N(mu_c, sigma^2) g_{t_next} (Gaussian: mean (mu_c v_g + a ybar sigma^2) / (sigma^2 + v_g),
  variance sigma^2 v_g / (sigma^2 + v_g)), the orthogonal complement from the kernel itself; weights
  w <- w N(a ybar; mu_c, sigma^2 + v_g) / g_t(x_t), initial weights g_T(x_T); resampled
  systematically when the effective sample size falls below ``ess_threshold`` * ``particles``.
  The particles target the sampler's own chain times p(y | x(eps)): exact as ``particles`` grows,
  up to the time discretisation and eps. The returned x is one particle drawn by weight.
  Inpainting's ``smc`` (``controllable.inpaint``) is this filter with the pixels as coordinates.

``nfe`` counts score evaluations per sample (per particle for ``smc``); ``dps`` and ``pigdm`` add
one vector-Jacobian product through the score per step. The operator protocol is in
:mod:`scoresde.operators`.
"""

from __future__ import annotations

import math

import torch

from . import checks
from .operators import as_operator, has_adjoint
from .sampling import PREDICTORS, time_uniform
from .sampling.common import check_args, check_finite, final_tweedie, tweedie_denoise
from .sde import SDE
from .utils import append_dims

METHODS = ("dps", "pigdm", "smc")
KERNELS = ("reverse_diffusion", "ancestral")
OPTIONS = {"dps": ("predictor", "denoise", "scale"),
           "pigdm": ("predictor", "denoise", "scale", "jacobian"),
           "smc": ("predictor", "denoise", "particles", "ess_threshold")}


# --- argument checks (before any score evaluation) ------------------------------------------------


def _check_options(method: str, options: dict, batch: int, generator, device) -> dict:
    checks.choice("method", method, METHODS)
    unknown = sorted(set(options) - set(OPTIONS[method]))
    if unknown:
        raise ValueError(f"{method} takes the options {', '.join(OPTIONS[method])}; got unknown "
                         f"option(s) {', '.join(unknown)}")
    opts = {"predictor": "reverse_diffusion", "denoise": True, "scale": 1.0, "particles": 16,
            "ess_threshold": 0.5, "jacobian": "vjp", **options}
    if opts["jacobian"] not in ("vjp", "gaussian"):
        raise ValueError(f"jacobian={opts['jacobian']!r} must be 'vjp' or 'gaussian'")
    if not isinstance(opts["predictor"], str) or opts["predictor"] not in KERNELS:
        raise ValueError(f"predictor={opts['predictor']!r}: solve_inverse needs a Gaussian predictor, "
                         f"one of {', '.join(KERNELS)}")
    K = opts["particles"]
    if isinstance(K, bool) or not isinstance(K, (int, float)) or not math.isfinite(K) or int(K) != K \
            or K < 1:
        raise ValueError(f"particles={K!r} must be an integer >= 1 (e.g. 16)")
    opts["ess_threshold"] = checks.number("ess_threshold", opts["ess_threshold"], 0.0, 1.0)
    opts["scale"] = checks.number("scale", opts["scale"], 0.0)
    opts["denoise"] = checks.flag("denoise", opts["denoise"])
    if generator is not None and not isinstance(generator, torch.Generator) \
            and isinstance(generator, list | tuple) and len(generator) != batch:
        raise ValueError(f"got {len(generator)} per-sample generators for {batch} measurements; "
                         "give one torch.Generator or one per row of y")
    checks.generator("generator", generator, batch, device)
    return {**opts, "particles": int(K)}


def _check_problem(score_fn, sde, y, A, noise_std, method: str):
    """The operator, with y (B, m) and noise_std checked against it."""
    checks.function("score_fn", score_fn)
    checks.sde(sde)
    if not isinstance(y, torch.Tensor) or y.ndim != 2:
        shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(f"y must be a (B, m) tensor of measurements, got {shape}")
    checks.tensor("y", y, rank=2, what="(B, m) of measurements")
    v = checks._scalar(noise_std)
    if v is None or not math.isfinite(v) or v < 0:  # also rejects NaN, None and text
        raise ValueError(f"noise_std={noise_std!r} must be a finite number >= 0 (0 = noiseless)")
    noise = float(v)
    op = as_operator(A)
    if method in ("pigdm", "smc") and not has_adjoint(op):
        raise ValueError(f"A ({type(op.obj).__name__}) has no adjoint(v); method {method!r} needs "
                         "A^T: add adjoint(v) -> (B, *in_shape), or use method='dps'")
    m = op.forward(torch.zeros(1, *op.in_shape, dtype=y.dtype, device=y.device)).shape
    if tuple(m) != (1, y.shape[1]):
        raise ValueError(f"A maps x of shape {op.in_shape} to {tuple(m)[1:]} measurements but y has "
                         f"shape {tuple(y.shape)}; give y as (B, m) with A's m = {tuple(m)[1:]}")
    return op, noise


# --- DPS and PiGDM --------------------------------------------------------------------------------


def _denoised(score_fn, sde, x, t):
    """(score, x0) at x_t with the graph from x to x0 kept (x requires grad)."""
    score = score_fn(x, t)
    return score, tweedie_denoise(lambda *_: score, sde, x, t)


def dps_step(score_fn, sde, op, y, x, t, t_next, predictor, scale, generator):
    """One DPS step (Chung et al. 2023, Algorithm 1) from t to t_next."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        score, x0 = _denoised(score_fn, sde, xg, t)
        sq = ((y - op.forward(x0)) ** 2).sum(1)
        (grad,) = torch.autograd.grad(sq.sum(), xg)
    zeta = scale / sq.detach().sqrt().clamp_min(1e-12)
    x_next, _ = PREDICTORS[predictor](lambda *_: score.detach(), sde, x, t, t_next, generator)
    return x_next - append_dims(zeta, x.ndim) * grad


def pigdm_step(score_fn, sde, op, y, noise_var, x, t, t_next, predictor, scale, generator,
               jacobian="vjp"):
    """One step with the PiGDM guidance (Song et al. 2023) added to the score. ``jacobian``:
    ``vjp`` = the paper's (d x0 / d x_t)^T by autograd through the score; ``gaussian`` = the
    Jacobian of PiGDM's own Gaussian model, a r_t^2 / s^2 I (equal for N(0, I) data; no backward
    pass, and no 1 / a(t) amplification of the network's error near t = T)."""
    sigma2 = (sde.std(t) / sde.mean_coeff(t)) ** 2
    r2 = sigma2 / (1 + sigma2)
    with torch.enable_grad():
        xg = x.detach().requires_grad_(jacobian == "vjp")
        score, x0 = _denoised(score_fn, sde, xg, t)
        v = op.adjoint(op.gram_solve(y - op.forward(x0.detach()), r2, noise_var)).to(x0)
        if jacobian == "vjp":
            (guide,) = torch.autograd.grad(x0, xg, grad_outputs=v)
        else:
            guide = append_dims(sde.mean_coeff(t) * r2 / sde.std(t) ** 2, x.ndim) * v
    cond = score.detach() + scale * guide
    x_next, _ = PREDICTORS[predictor](lambda *_: cond, sde, x, t, t_next, generator)
    return x_next


# --- SMC (MCGDiff) --------------------------------------------------------------------------------


def gaussian_kernel(score_fn, sde: SDE, x, t, t_next, predictor: str = "reverse_diffusion"):
    """The backward kernel N(mean, std^2 I) of a Gaussian predictor; (mean, std (B,)).

    The mean is the predictor's ``x_mean`` (its noise, drawn from a scratch generator, is
    discarded); std = sqrt(v) for ``reverse_diffusion`` (eq. 46), sqrt(v) s(t_next) / s(t) for
    ``ancestral``, with v the variance of the exact forward transition from t_next to t.
    """
    scratch = torch.Generator(device=x.device)
    _, mean = PREDICTORS[predictor](score_fn, sde, x, t, t_next, scratch)
    v = sde.transition(t, t_next)[1]
    return mean, v.sqrt() if predictor == "reverse_diffusion" else v.sqrt() * sde.std(t_next) / sde.std(t)


def _uniforms(B: int, generator, device, dtype) -> torch.Tensor:
    """(B,) uniforms on [0, 1): from one generator, or one from each per-sample generator."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.rand((B,), generator=generator, device=device, dtype=dtype)
    return torch.cat([torch.rand((1,), generator=g, device=device, dtype=dtype) for g in generator])


def _particle_randn(B: int, K: int, tail, generator, device, dtype) -> torch.Tensor:
    """(B K, *tail) normals; with per-sample generators, observation i's K particles use the i-th."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn((B * K, *tail), generator=generator, device=device, dtype=dtype)
    return torch.cat([torch.randn((K, *tail), generator=g, device=device, dtype=dtype)
                      for g in generator])


def systematic_resample(log_w: torch.Tensor, generator=None) -> torch.Tensor:
    """Indices (B, K) drawn by systematic resampling from each row's weights exp(log_w) (B, K)."""
    B, K = log_w.shape
    cdf = torch.cumsum(torch.softmax(log_w, dim=1), dim=1)
    cdf[:, -1] = 1.0
    u = _uniforms(B, generator, log_w.device, log_w.dtype)[:, None]
    points = (u + torch.arange(K, device=log_w.device, dtype=log_w.dtype)) / K
    return torch.searchsorted(cdf, points).clamp(max=K - 1)


def _resample(x, log_w, B, K, threshold, generator):
    """Resample the rows whose effective sample size 1 / sum w^2 fell below threshold * K (the
    uniforms are drawn for every row, so that a row's stream does not depend on the others)."""
    if K == 1:
        return x, log_w
    lw = log_w.view(B, K)
    low = 1.0 / (torch.softmax(lw, dim=1) ** 2).sum(1) < threshold * K
    idx = systematic_resample(lw, generator)
    idx = torch.where(low[:, None], idx, torch.arange(K, device=x.device).expand(B, K))
    flat = (idx + K * torch.arange(B, device=x.device)[:, None]).reshape(-1)
    return x[flat], torch.where(low[:, None], torch.zeros_like(lw), lw).reshape(-1)


def particle_filter(score_fn, sde: SDE, shape, ybar, obs_var, steps: int, eps: float,
                    predictor: str = "reverse_diffusion", weight=None, V=None, denoise: bool = True,
                    generator=None, particles: int = 16, ess_threshold: float = 0.5):
    """MCGDiff's particle filter (module docstring) for observed coordinates c = V^T x flattened
    (V (D, r) orthonormal columns; ``None``: the pixels, r = D). ``ybar`` (B, r): the coordinates'
    measurement; ``obs_var`` (r,) or a float: its noise variance sigmabar^2 (0 = noiseless);
    ``weight`` (B, r) of 0/1 or None: which coordinates are observed. Returns ``(x, nfe)``."""
    B, K = shape[0], int(particles)
    if generator is not None and not isinstance(generator, torch.Generator) and len(generator) != B:
        raise ValueError(f"got {len(generator)} per-sample generators for a batch of {B}")
    dev, dt = ybar.device, ybar.dtype
    yk = ybar.repeat_interleave(K, dim=0)
    wk = None if weight is None else weight.repeat_interleave(K, dim=0)
    obs_var = torch.as_tensor(obs_var, device=dev, dtype=dt)

    def coords(z):
        return z.flatten(1) if V is None else z.flatten(1) @ V

    def put(z, c):  # z with its coordinates replaced by c
        return c.view_as(z) if V is None else (z.flatten(1) + (c - coords(z)) @ V.T).view_as(z)

    def log_normal(target, mean, var):  # sum over observed coordinates, (N,)
        lp = -0.5 * (target - mean) ** 2 / var - 0.5 * torch.log(2 * math.pi * var)
        return (lp if wk is None else wk * lp).sum(1)

    def var_g(t):  # (N, r): the potential's variance s^2 + a^2 sigmabar^2
        return sde.std(t)[:, None] ** 2 + sde.mean_coeff(t)[:, None] ** 2 * obs_var

    times = time_uniform(sde, steps, eps, dev, dt)
    N = B * K
    x = sde.prior_std() * _particle_randn(B, K, shape[1:], generator, dev, dt)
    t = times[0].expand(N)
    log_w = log_normal(sde.mean_coeff(t)[:, None] * yk, coords(x), var_g(t))
    for i in range(steps):
        t, t_next = times[i].expand(N), times[i + 1].expand(N)
        x, log_w = _resample(x, log_w, B, K, ess_threshold, generator)
        mu, sigma = gaussian_kernel(score_fn, sde, x, t, t_next, predictor)
        var_k, vg = sigma[:, None] ** 2, var_g(t_next)
        mu_c, target = coords(mu), sde.mean_coeff(t_next)[:, None] * yk
        log_w = log_w + log_normal(target, mu_c, var_k + vg) - \
            log_normal(sde.mean_coeff(t)[:, None] * yk, coords(x), var_g(t))
        z = _particle_randn(B, K, shape[1:], generator, dev, dt)
        x_new = mu + append_dims(sigma, mu.ndim) * z
        c = (mu_c * vg + target * var_k) / (var_k + vg) + torch.sqrt(var_k * vg / (var_k + vg)) * coords(z)
        x = put(x_new, c if wk is None else wk * c + (1 - wk) * coords(x_new))
    nfe = steps
    if denoise:
        x, nfe = final_tweedie(score_fn, sde, x, times[-1].item()), nfe + 1
    cdf = torch.cumsum(torch.softmax(log_w.view(B, K), dim=1), dim=1)
    cdf[:, -1] = 1.0
    choice = torch.searchsorted(cdf, _uniforms(B, generator, dev, dt)[:, None]).clamp(max=K - 1)
    return x.view(B, K, *shape[1:])[torch.arange(B, device=dev), choice[:, 0]], nfe


# --- the solver -----------------------------------------------------------------------------------


def solve_inverse(score_fn, sde: SDE, y: torch.Tensor, A, noise_std: float, steps: int,
                  method: str = "dps", eps: float | None = None, generator=None, **options):
    """Draw x ~ p(x | y) for y = A x + noise_std n; returns ``(x, nfe)`` with x (B, *A.in_shape).

    ``y`` (B, m): one measurement per row. ``A``: a dense (m, D) tensor on x flattened or an
    operator (``scoresde.operators``: ``in_shape``, ``forward``, ``adjoint``). ``method``: ``dps``,
    ``pigdm`` or ``smc`` (module docstring). ``generator``: one ``torch.Generator`` or one per row
    of y (then sample i is the same whatever the batch). Options: ``predictor``
    (``reverse_diffusion`` default, or ``ancestral``), ``denoise`` (final Tweedie step, default
    True); ``dps`` / ``pigdm``: ``scale`` (zeta / guidance weight, default 1); ``pigdm``:
    ``jacobian`` (``vjp``, default, or ``gaussian``: :func:`pigdm_step`); ``smc``:
    ``particles`` (default 16), ``ess_threshold`` (default 0.5).
    """
    checks.choice("method", method, METHODS)
    op, noise = _check_problem(score_fn, sde, y, A, noise_std, method)
    opts = _check_options(method, options, y.shape[0], generator, y.device)
    eps = sde.sampling_eps if eps is None else checks.eps(eps, sde)
    check_args(sde, steps, eps)
    steps, B = int(steps), y.shape[0]
    shape = (B, *op.in_shape)
    if method == "smc":
        U, S, V = op.svd(y.dtype, y.device)
        x, nfe = particle_filter(score_fn, sde, shape, (y @ U) / S, (noise / S) ** 2, steps, eps,
                                 opts["predictor"], V=V, denoise=opts["denoise"],
                                 generator=generator, particles=opts["particles"],
                                 ess_threshold=opts["ess_threshold"])
        return check_finite(x, "solve_inverse(smc)"), nfe
    times = time_uniform(sde, steps, eps, y.device, y.dtype)
    x = sde.prior_std() * _particle_randn(B, 1, shape[1:], generator, y.device, y.dtype)
    for i in range(steps):
        t, t_next = times[i].expand(B), times[i + 1].expand(B)
        if method == "dps":
            x = dps_step(score_fn, sde, op, y, x, t, t_next, opts["predictor"], opts["scale"],
                         generator)
        else:
            x = pigdm_step(score_fn, sde, op, y, noise**2, x, t, t_next, opts["predictor"],
                           opts["scale"], generator, opts["jacobian"])
    nfe = steps
    if opts["denoise"]:
        x, nfe = final_tweedie(score_fn, sde, x, eps), nfe + 1
    return check_finite(x.detach(), f"solve_inverse({method})"), nfe
