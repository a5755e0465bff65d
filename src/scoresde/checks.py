"""The library's argument boundary: one place where every public function checks its arguments.

Each check takes the argument's name and value and either returns the value in its working form
(an ``int`` for a whole number, a ``float`` for a number, a ``tuple`` for a shape) or raises one
``ValueError`` that names the argument and the value: ``snr must be >= 0.0 and finite, got
'0.16' (a str, not a number)``. The public functions call them first, so a bad argument is
refused before the first score evaluation; every check runs once per call (no per-step cost).

What is refused, in the words of the docstrings:

- numbers: NaN, +-Inf (unless a bound may be infinite), text (``"0.16"``), ``None``, bools
  (``True`` is not a step count), complex numbers, values outside the documented range;
- whole numbers (steps, N, particles, levels, ...): fractions (``2.7``), bools, text;
- flags (``denoise``): anything but True / False (``"no"`` is not False);
- options (methods, predictors, divergences): names outside the listed choices;
- shapes: fewer than two sizes (the batch first), sizes that are not whole numbers >= 1;
- tensors: integer, bool or complex dtypes where floating data is meant, NaN / Inf, a wrong
  rank, an empty batch or an empty dimension, a batch other than its partner's;
- dtypes and devices: a dtype that is not floating point, a device torch cannot parse;
- generators: anything but None, one ``torch.Generator``, or one per sample, on the device the
  noise is drawn on.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch

__all__ = ["choice", "device", "dtype", "eps", "flag", "function", "generator", "number", "options",
           "positive_range", "sde", "shape", "show", "sizes", "start", "tensor", "times", "whole"]


def show(value) -> str:
    """The value as a message shows it: tensors by shape and dtype, other values by repr."""
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    text = repr(value)
    if isinstance(value, str):
        return f"{text} (a str, not a number)" if _looks_numeric(value) else text
    return text if len(text) <= 80 else text[:77] + "..."


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _scalar(value):
    """A real Python number from ``value`` (int, float, numpy scalar, 0-d real tensor), or None."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return None
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.ndim != 0 or value.dtype == torch.bool or value.is_complex():
            return None
        return value.item()
    if isinstance(value, numbers.Real):
        return value
    return None


def whole(name: str, value, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an int: a whole number in [minimum, maximum] (2.7, True, NaN, text refused)."""
    v = _scalar(value)
    ok = v is not None and (isinstance(v, numbers.Integral)
                            or (isinstance(v, float) and math.isfinite(v) and v == int(v)))
    if ok:
        v = int(v)
        ok = (minimum is None or v >= minimum) and (maximum is None or v <= maximum)
    if not ok:
        if maximum is None:
            rule = "a whole number" + ("" if minimum is None else f" >= {minimum}")
        else:
            rule = f"a whole number in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be {rule}, got {show(value)}")
    return v


def number(name: str, value, lo: float = -math.inf, hi: float = math.inf, *, open_lo: bool = False,
           open_hi: bool = False, finite: bool = True) -> float:
    """``value`` as a float in the range [lo, hi] (``open_lo`` / ``open_hi``: excluded ends);
    NaN always refused, +-Inf unless ``finite=False``, text / None / bools / complex refused."""
    v = _scalar(value)
    ok = v is not None and not math.isnan(v) and (math.isfinite(v) or not finite)
    if ok:
        v = float(v)
        ok = (v > lo if open_lo else v >= lo) and (v < hi if open_hi else v <= hi)
    if not ok:
        if lo == -math.inf and hi == math.inf:
            span = "a finite number" if finite else "a number"
        elif hi == math.inf:
            span = f"{'>' if open_lo else '>='} {lo}"
        elif lo == -math.inf:
            span = f"{'<' if open_hi else '<='} {hi}"
        else:
            span = f"in {'(' if open_lo else '['}{lo}, {hi}{')' if open_hi else ']'}"
        if finite and (lo == -math.inf) != (hi == math.inf):
            span += " and finite"
        raise ValueError(f"{name} must be {span}, got {show(value)}")
    return v


def flag(name: str, value) -> bool:
    """``value`` as a bool: only True or False (``"no"``, 0, None are refused)."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return bool(value)
    raise ValueError(f"{name} must be True or False, got {show(value)}")


def choice(name: str, value, choices, kind: str | None = None) -> str:
    """``value`` when it is one of ``choices`` (names); the message lists them."""
    if isinstance(value, str) and value in choices:
        return value
    what = f"unknown {kind} {value!r}" if kind and isinstance(value, str) else \
        f"{name}={show(value)} is unknown"
    raise ValueError(f"{what}; choose one of {', '.join(choices)}")



def options(method: str, given: dict, allowed, kind: str = "method") -> None:
    """ValueError naming an option the method (or another ``kind`` of thing) does not take."""
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        names = ", ".join(allowed) or "none"
        raise ValueError(f"{kind} {method!r} takes no option {unknown[0]!r}; its options: {names}")


def function(name: str, value):
    """``value`` when it is callable (a score function, a log-probability)."""
    if not callable(value):
        raise ValueError(f"{name} must be a function (x, t) -> tensor, got {show(value)}")
    return value


def positive_range(lo_name: str, lo, hi_name: str, hi, what: str) -> tuple[float, float]:
    """Two finite numbers with 0 < lo < hi (an SDE's sigma or beta range), as floats."""
    lo = number(lo_name, lo, 0.0, open_lo=True)
    hi = number(hi_name, hi, 0.0, open_lo=True)
    if not lo < hi:
        raise ValueError(f"{what} needs 0 < {lo_name} < {hi_name}, got {lo_name}={lo}, "
                         f"{hi_name}={hi}")
    return lo, hi


SDE_METHODS = ("sde", "marginal_prob", "prior_sampling", "reverse")


def sde(value):
    """``value`` when it is an SDE of :mod:`scoresde.sde`: it has ``T`` and the methods of the
    ``SDE`` base class (checked by name, so this leaf module imports no other of the package)."""
    if not (hasattr(value, "T") and all(callable(getattr(value, m, None)) for m in SDE_METHODS)):
        raise ValueError(f"sde must be an SDE (VESDE, VPSDE, SubVPSDE), got {show(value)}")
    return value


def eps(value, sde_, name: str = "eps") -> float:
    """The end time eps in (0, T) as a float."""
    v = _scalar(value)
    if v is None or not 0 < v < sde_.T:  # NaN fails the comparison
        raise ValueError(f"{name} must lie in (0, T={sde_.T}), got {show(value)}")
    return float(v)


def sizes(name: str, value, rank: int | None = None, min_rank: int = 1) -> tuple[int, ...]:
    """A tuple of whole sizes >= 1 (a tensor shape), of ``rank`` or at least ``min_rank`` entries."""
    ok = isinstance(value, Sequence | torch.Size) and not isinstance(value, str)
    if ok:
        n = len(value)
        ok = n == rank if rank is not None else n >= min_rank
    if ok:
        try:
            return tuple(whole(name, s, 1) for s in value)
        except ValueError:
            pass
    want = f"{rank} sizes" if rank is not None else f"at least {min_rank} size(s)"
    raise ValueError(f"{name} must be a tuple of {want}, each a whole number >= 1, got {show(value)}")


def shape(name: str, value) -> tuple[int, ...]:
    """A sample shape (B, ...): the batch first, at least one data dimension, every size >= 1."""
    ok = isinstance(value, Sequence | torch.Size) and not isinstance(value, str) and len(value) >= 2
    if ok:
        try:
            return tuple(whole(name, s, 1) for s in value)
        except ValueError:
            pass
    raise ValueError(f"{name} must be (B, ...): the batch then the data dimensions (e.g. (4, 2) or "
                     f"(4, 1, 8, 8)), every size a whole number >= 1, got {show(value)}")


def dtype(name: str, value):
    """None or a floating torch dtype."""
    if value is None or (isinstance(value, torch.dtype) and value.is_floating_point):
        return value
    raise ValueError(f"{name} must be a floating torch dtype (torch.float32, torch.float64) or None, "
                     f"got {show(value)}")


def device(name: str, value):
    """None, or a device torch understands (``"cpu"``, ``"cuda:0"``, a torch.device)."""
    if value is None or isinstance(value, torch.device):
        return value
    if isinstance(value, str):
        try:
            return torch.device(value)
        except RuntimeError:
            pass
    raise ValueError(f"{name} must be a torch.device or a device name such as 'cpu' or 'cuda', "
                     f"got {show(value)}")


def generator(name: str, value, batch: int | None = None, on=None):
    """None, one ``torch.Generator``, or a list of them with one per sample (``batch``); every
    generator on the device type of ``on`` (where the noise is drawn) when that is known."""
    gens = [value] if isinstance(value, torch.Generator) else value
    if value is not None:
        ok = isinstance(gens, Sequence) and not isinstance(gens, str) and len(gens) > 0 and \
            all(isinstance(g, torch.Generator) for g in gens)
        if not ok:
            raise ValueError(f"{name} must be a torch.Generator, a list of them (one per sample) or "
                             f"None, got {show(value)}")
        if batch is not None and not isinstance(value, torch.Generator) and len(gens) != batch:
            raise ValueError(f"{name}: got {len(gens)} per-sample generators for a batch of {batch}; "
                             "give one torch.Generator or one per sample")
        if on is not None:
            where = torch.device(on).type
            if any(g.device.type != where for g in gens):
                raise ValueError(f"{name} is on {gens[0].device} but the noise is drawn on {where}; "
                                 f"pass torch.Generator(device={where!r})")
    return value


def tensor(name: str, value, *, rank: int | None = None, min_rank: int = 1, floating: bool = True,
           finite: bool = True, batch: int | None = None, what: str = "") -> torch.Tensor:
    """``value`` when it is a tensor of ``rank`` (or >= ``min_rank``) dimensions, every size >= 1,
    of a floating dtype (``floating``), all finite (``finite``), with ``batch`` rows when given."""
    what = f" {what}" if what else ""
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name} must be a tensor{what}, got {show(value)}")
    if (rank is not None and value.ndim != rank) or value.ndim < min_rank:
        want = f"{rank}" if rank is not None else f"at least {min_rank}"
        raise ValueError(f"{name} must be a tensor{what} with {want} dimension(s), got shape "
                         f"{tuple(value.shape)}")
    if value.ndim and min(value.shape) == 0:
        raise ValueError(f"{name} must be a tensor{what} with every size >= 1, got shape "
                         f"{tuple(value.shape)}")
    if floating and not value.is_floating_point():
        raise ValueError(f"{name} must hold floating-point numbers (torch.float32 or torch.float64), "
                         f"got dtype {value.dtype}")
    if finite and value.is_floating_point() and not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} holds NaN or Inf values ({show(value)}); pass finite numbers")
    if batch is not None and value.shape[0] != batch:
        raise ValueError(f"{name} has a batch of {value.shape[0]} but {batch} is expected{what}")
    return value


def times(name: str, value) -> torch.Tensor:
    """A time grid: a 1-D floating tensor of >= 2 finite, strictly decreasing times, the last > 0."""
    tensor(name, value, rank=1)
    if len(value) < 2 or not bool((value[1:] < value[:-1]).all()) or value[-1].item() <= 0:
        raise ValueError(f"{name} must be a strictly decreasing grid of >= 2 times ending above 0, "
                         f"got {value.tolist() if len(value) <= 8 else show(value)}")
    return value


def start(sde_, x, times_, generator_) -> None:
    """The arguments of a step function ``sample_<method>(score_fn, sde, x, times, generator)``."""
    sde(sde_)
    tensor("x", x, min_rank=2)
    times("times", times_)
    generator("generator", generator_, x.shape[0], x.device)
