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


# The random streams of a run, in a fixed order: a purpose's position is the first word of its
# SeedSequence spawn key, so purposes may be added at the end without changing existing streams.
SEED_PURPOSES = (
    "data",           # index 0 / 1: the train / test draws of a 2-D toy; 2: the FID reference subset
    "train-init",     # the global torch seed of training: the network's initial weights
    "train-batches",  # training batch indices and their dequantisation noise
    "train-noise",    # DSM times t and noise z
    "sample",         # index i: sample i's prior draw and sampler noise (select and sample)
    "likelihood",     # index i: test image i's dequantisation noise and Hutchinson probes
    "classifier",     # the noise-conditional classifier's batches, times and noise
    "controllable",   # index (k, i): class-conditional sample i of class k; (0,): inpainting
    "inverse",        # (0,): measurement noise; (1,): random projection; (2, i): image i's sampler
)


def seed_stream(seed: int, purpose: str, *index: int) -> int:
    """A 64-bit seed for one independent random stream of ``purpose`` (``SEED_PURPOSES``).

    The stream is the SeedSequence child ``numpy.random.SeedSequence(seed).spawn(...)[p]
    .spawn(...)[i]...`` with p the purpose's position and ``index`` the further spawn keys (e.g.
    a sample index), i.e. ``SeedSequence(seed, spawn_key=(p, *index))``: its hash mixes the seed
    with the whole key, so equal seeds of different purposes (or indices) give unrelated
    streams, and a stream depends only on (seed, purpose, index) (stable across versions and
    batch sizes). Returns the first 64 bits of its state, a valid ``torch.Generator`` seed.
    """
    import numpy as np

    if purpose not in SEED_PURPOSES:
        raise ValueError(f"unknown seed purpose {purpose!r}; choose one of {', '.join(SEED_PURPOSES)}")
    if int(seed) < 0 or any(int(i) < 0 for i in index):
        raise ValueError(f"seeds and stream indices must be >= 0, got seed {seed}, index {index}")
    key = (SEED_PURPOSES.index(purpose), *(int(i) for i in index))
    state = np.random.SeedSequence(int(seed), spawn_key=key).generate_state(1, np.uint64)
    return int(state[0])


def seeded_generator(seed: int, purpose: str, *index: int, device="cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed_stream(seed, purpose, *index)``."""
    return torch.Generator(device=device).manual_seed(seed_stream(seed, purpose, *index))


def per_sample_generators(seed: int, start: int, count: int, device="cpu",
                          purpose: str = "sample") -> list[torch.Generator]:
    """One generator per sample index ``start .. start+count-1``: index i gets the stream
    ``seed_stream(seed, purpose, i)``, so sample i is the same whatever batch it is drawn in."""
    return [seeded_generator(seed, purpose, i, device=device) for i in range(start, start + count)]


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
