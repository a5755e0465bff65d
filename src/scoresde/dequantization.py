"""Dequantisation distributions for discrete data: the cells, the draws and their densities.

Integer data k in {0, ..., L-1}^D lives in model space as x = scale * (k + u) / L + shift, so k owns
the cell ``C_k = c_k + [-h, h)^D`` with centre c_k = scale * (k + 1/2) / L + shift and half-width
h = scale / (2 L), of volume (scale / L)^D. A continuous model p of x gives the discrete model
P(k) = int_{C_k} p(x) dx, and any density q supported in C_k gives the variational bound

    log P(k) >= E_q [log p(x) - log q(x)]                                      (Ho et al. 2019, eq. 6)

whose gap is KL(q || p(. | C_k)). Two proposals (drawn here; the ODE that evaluates p is in
:mod:`scoresde.likelihood`):

- uniform on the cell (Song et al. 2021, App. D.2; Theis et al. 2016): log q = D log(L / scale);
- truncated normal (Zheng et al., ICML 2023, "i-DODE", Sec. 4.2): the perturbation kernel of the
  SDE at a start time t0, x(t0) = a(t0) c_k + s(t0) z, with z ~ N(0, I) truncated to [-tau, tau]^D
  and tau = a(t0) h / s(t0), so that x(t0) / a(t0) fills exactly the cell C_k. Its density is
  log q = sum_d [log phi(z_d) - log Z(tau)] - D log s(t0), Z(tau) = erf(tau / sqrt 2), with
  entropy D [log s(t0) + H(tau)], H(tau) = log(sqrt(2 pi e) Z) - tau phi(tau) / Z (eq. 15 there).
  It bounds the discrete model of the time-t0 marginal, P_t0(k) = int_{a(t0) C_k} p_t0(x) dx.

The cells and draws depend on the SDE only through a(t0) and s(t0) (VE: a = 1, s = sigma(t);
VP: a = exp(-int beta / 2), s = sqrt(1 - a^2); sub-VP: s = 1 - a^2), so one code path serves all.
"""

from __future__ import annotations

import math
import numbers

import torch

from . import checks
from .sde import SDE
from .utils import Generator, rand

METHODS = ("uniform", "importance", "truncated-normal")


def check_discrete_input(k: torch.Tensor, levels, dequantization: str, samples, scale: float,
                         tau: float | None = None, shift: float = 0.0, generator=None) -> None:
    """ValueError naming the argument and its value for anything a user can get wrong."""
    checks.choice("dequantization", dequantization, METHODS, "dequantization")
    for name, value, low in (("samples", samples, 1), ("levels", levels, 2)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not math.isfinite(scale) \
            or scale <= 0:
        raise ValueError(f"scale must be a positive number (the width of the data range), got {scale!r}")
    checks.number("shift", shift)
    if tau is not None:
        checks.number("tau", tau, 0.0, open_lo=True)
    check_levels(k, levels)
    checks.generator("generator", generator, k.shape[0], k.device)


def check_levels(k: torch.Tensor, levels) -> None:
    """``k`` a (B, ...) tensor of integer levels 0..levels-1 with every size >= 1."""
    levels = checks.whole("levels", levels, 2)
    checks.tensor("k", k, min_rank=2, floating=False, finite=False,
                  what=f"(B, ...) of integer levels 0..{levels - 1}")
    if k.dtype == torch.bool or k.is_complex():
        raise ValueError(f"k must hold integer levels 0..{levels - 1}, got a tensor of dtype {k.dtype}")
    if k.is_floating_point():
        bad = k[k != k.round()]
        if bad.numel():
            raise ValueError(f"k must hold integer levels 0..{levels - 1}, got the value {bad[0].item()!r}")
    values = k if k.is_floating_point() else k.long()  # uint8 compared with 300 would wrap around
    bad = k[(values < 0) | (values > levels - 1)]
    if bad.numel():
        raise ValueError(f"k must lie in 0..{levels - 1} (levels={levels}), got the value {bad[0].item()!r}")


def half_width(levels: int, scale: float) -> float:
    """h = scale / (2 L): half the side of a cell in model space."""
    return scale / (2 * levels)


def cell_centre(k: torch.Tensor, levels: int, scale: float, shift: float, dtype=None) -> torch.Tensor:
    """c_k = scale * (k + 1/2) / L + shift."""
    dtype = dtype or torch.get_default_dtype()
    return scale * (k.to(dtype) + 0.5) / levels + shift


def uniform_draws(k: torch.Tensor, levels: int, scale: float, shift: float, samples: int,
                  generator: Generator = None) -> torch.Tensor:
    """x = scale * (k + u) / L + shift, u ~ U[0, 1)^D, shape (B, S, ...); image i's S draws come
    from ``generator[i]`` when a list of per-sample generators is given."""
    dtype = torch.get_default_dtype()
    u = rand((k.shape[0], samples, *k.shape[1:]), generator, device=k.device, dtype=dtype)
    return scale * (k.to(dtype).unsqueeze(1) + u) / levels + shift


def uniform_log_q(dim: int, levels: int, scale: float) -> float:
    """log q(x) = D log(L / scale), the uniform density on a cell."""
    return dim * math.log(levels / scale)


def _ratio(sde: SDE, t: float) -> float:
    tt = torch.tensor([t], dtype=torch.float64)
    return (sde.std(tt) / sde.mean_coeff(tt)).item()


def truncated_normal_start(sde: SDE, levels: int, scale: float, eps: float,
                           tau: float | None = None) -> tuple[float, float]:
    """The start time t0 of the truncated-normal bound and its truncation tau.

    The kernel's noise-to-signal ratio s(t) / a(t) increases with t for VE, VP and sub-VP. With
    ``tau=None`` the ODE starts at ``eps`` and tau = a(eps) h / s(eps) (i-DODE's choice: the
    support of x(t0) / a(t0) is the cell). Given tau, t0 = max(eps, t*) with s(t*) / a(t*) = h / tau
    (bisection), and tau is recomputed at t0, so it is lowered where t* < eps (e.g. VE, whose
    s(0) = sigma_min > 0). Returns ``(t0, tau)``.
    """
    h = half_width(levels, scale)
    t0 = float(eps)
    if tau is not None and _ratio(sde, t0) < h / tau:
        if _ratio(sde, sde.T) <= h / tau:
            raise ValueError(f"tau={tau} needs s(t)/a(t) = {h / tau:.3g}, beyond the SDE's range at T; "
                             "choose a larger tau")
        lo, hi = t0, float(sde.T)
        for _ in range(100):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if _ratio(sde, mid) < h / tau else (lo, mid)
        t0 = hi
    return t0, h / _ratio(sde, t0)


def truncated_normal(shape, tau: float, generator: Generator = None, device=None, dtype=None) -> torch.Tensor:
    """z ~ N(0, 1) truncated to [-tau, tau] by inversion: z = sqrt 2 erfinv((2u - 1) erf(tau / sqrt 2))."""
    u = rand(shape, generator, device=device, dtype=torch.float64)
    z = math.sqrt(2.0) * torch.erfinv((2 * u - 1) * math.erf(tau / math.sqrt(2.0)))
    return z.clamp(-tau, tau).to(dtype or torch.get_default_dtype())


def truncated_normal_draws(k: torch.Tensor, levels: int, scale: float, shift: float, samples: int,
                           a: float, s: float, tau: float, generator: Generator = None):
    """x(t0) = a c_k + s z, z ~ TN(0, 1, [-tau, tau]), shape (B, S, ...), and z."""
    z = truncated_normal((k.shape[0], samples, *k.shape[1:]), tau, generator, k.device)
    return a * cell_centre(k, levels, scale, shift).unsqueeze(1) + s * z, z


def truncated_normal_log_q(z: torch.Tensor, s: float, tau: float) -> torch.Tensor:
    """log q(x(t0)) = sum_d [-z_d^2 / 2 - log(sqrt(2 pi) Z)] - D log s, over all but the first two dims."""
    dim = z[0, 0].numel()
    log_norm = 0.5 * math.log(2 * math.pi) + math.log(math.erf(tau / math.sqrt(2.0))) + math.log(s)
    return -0.5 * (z.flatten(2) ** 2).sum(2) - dim * log_norm


def truncated_normal_entropy(dim: int, s: float, tau: float) -> float:
    """-E_q log q = D [log s + log(sqrt(2 pi e) Z) - tau phi(tau) / Z], Z = erf(tau / sqrt 2)."""
    Z = math.erf(tau / math.sqrt(2.0))
    phi = math.exp(-0.5 * tau**2) / math.sqrt(2 * math.pi)
    return dim * (math.log(s) + 0.5 * math.log(2 * math.pi * math.e) + math.log(Z) - tau * phi / Z)
