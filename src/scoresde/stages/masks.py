"""The inpainting masks of the controllable stages (``controllable.inpaint.masks``).

A leaf module: the stages (:mod:`scoresde.stages.controllable`) and their input checks
(:mod:`scoresde.stages.inputs`) both import it, and it imports neither.
"""

from __future__ import annotations

import torch

MASKS = ("centre", "left", "random")


def make_mask(name: str, shape, seed: int = 0) -> torch.Tensor:
    """A 0/1 mask (1 = observed) of ``shape`` (N, C, H, W): ``centre`` hides the central box of
    half the height and width, ``left`` the left half, ``random`` each pixel with probability 1/2
    (the same pixels for all channels; seeded)."""
    N, C, H, W = shape
    mask = torch.ones(shape)
    if name == "centre":
        mask[..., H // 4: H // 4 + H // 2, W // 4: W // 4 + W // 2] = 0
    elif name == "left":
        mask[..., : W // 2] = 0
    elif name == "random":
        gen = torch.Generator().manual_seed(seed)
        mask = (torch.rand(N, 1, H, W, generator=gen) < 0.5).float().expand(shape).clone()
    else:
        raise ValueError(f"unknown mask {name!r}; choose one of {', '.join(MASKS)}")
    return mask
