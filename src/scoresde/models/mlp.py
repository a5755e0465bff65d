"""Noise-conditional MLP for 2-D toy data, with the U-Net's calling convention."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import NoiseEmbedding, linear


class MLP(nn.Module):
    """s(x, c): (B, dim), (B,) -> (B, dim); residual SiLU layers with the noise embedding
    (Fourier or positional, then a 2-layer MLP) added to every hidden layer. The output layer is
    zero-initialised, so the untrained network outputs 0."""

    def __init__(self, dim: int = 2, hidden: int = 128, layers: int = 3,
                 embedding: str = "positional", fourier_scale: float = 16.0):
        super().__init__()
        if layers < 1 or hidden < 1 or dim < 1:
            raise ValueError(f"model.layers={layers}, model.hidden={hidden} and model.dim={dim} "
                             "must all be >= 1")
        self.embed = NoiseEmbedding(embedding, hidden, hidden, fourier_scale)
        self.inp = linear(dim, hidden)
        self.cond_proj = nn.ModuleList(linear(hidden, hidden) for _ in range(layers))
        self.hidden = nn.ModuleList(linear(hidden, hidden) for _ in range(layers))
        self.out = linear(hidden, dim, zero=True)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        cond = cond.reshape(-1).expand(x.shape[0]) if cond.numel() == 1 else cond
        temb = F.silu(self.embed(cond))
        h = self.inp(x)
        for proj, layer in zip(self.cond_proj, self.hidden, strict=True):
            h = h + layer(F.silu(h + proj(temb)))
        return self.out(F.silu(h))
