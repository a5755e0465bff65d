"""Small tensor helpers shared by the SDE, sampling and likelihood modules."""

from __future__ import annotations

from collections.abc import Sequence

import torch

Generator = torch.Generator | Sequence[torch.Generator] | None


def append_dims(x: torch.Tensor, ndim: int) -> torch.Tensor:
    """Append trailing singleton dimensions so that ``x`` (shape (B,)) broadcasts against rank ``ndim``."""
    missing = ndim - x.ndim
    if missing < 0:
        raise ValueError(f"input has {x.ndim} dims but target has only {ndim}")
    return x[(...,) + (None,) * missing]


def batch_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum over every dimension but the first (the batch)."""
    return x.flatten(1).sum(dim=1)


def _draw(sampler, shape, generator: Generator, device, dtype) -> torch.Tensor:
    if generator is None or isinstance(generator, torch.Generator):
        return sampler(shape, generator=generator, device=device, dtype=dtype)
    if len(generator) != shape[0]:
        raise ValueError(f"got {len(generator)} per-sample generators for a batch of {shape[0]}")
    return torch.stack([sampler(shape[1:], generator=g, device=device, dtype=dtype) for g in generator])


def randn(shape, generator: Generator = None, device=None, dtype=None) -> torch.Tensor:
    """Standard normal noise of ``shape``.

    ``generator`` may be one ``torch.Generator`` for the whole batch, or a list with one generator per
    sample (EDM-style per-sample seeding): sample ``i`` then draws from ``generator[i]`` only, so it
    is the same whatever batch it is drawn in.
    """
    return _draw(torch.randn, shape, generator, device, dtype)


def rand(shape, generator: Generator = None, device=None, dtype=None) -> torch.Tensor:
    """Uniform noise on [0, 1), with the same generator conventions as :func:`randn`."""
    return _draw(torch.rand, shape, generator, device, dtype)


def rademacher(shape, generator: Generator = None, device=None, dtype=None) -> torch.Tensor:
    """Random signs +-1 (Hutchinson probes)."""
    u = rand(shape, generator, device, dtype)
    return torch.where(u < 0.5, -torch.ones_like(u), torch.ones_like(u))


def per_sample_generators(seed: int, start: int, count: int, device="cpu") -> list[torch.Generator]:
    """One generator per sample index ``start .. start+count-1``, seeded from ``seed`` and the index."""
    gens = []
    for i in range(start, start + count):
        g = torch.Generator(device=device)
        g.manual_seed((seed * 1_000_003 + i) % (2**63 - 1))
        gens.append(g)
    return gens


def generator_device(generator: Generator) -> torch.device | None:
    if generator is None:
        return None
    if isinstance(generator, torch.Generator):
        return generator.device
    return generator[0].device if len(generator) else None


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else the CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no CUDA GPU is visible; use --device cpu or auto")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ValueError(f"unknown device {name!r}; use auto, cpu or cuda")
    return torch.device(name)
