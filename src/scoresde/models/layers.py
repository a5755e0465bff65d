"""Building blocks of the DDPM++ U-Net (Song et al., ICLR 2021, appendix H; official `layerspp.py`).

Noise-level embeddings (Gaussian Fourier features, sinusoidal positional), the BigGAN-style
residual block with optional 2x up/down-sampling and skip rescaling by 1/sqrt(2), and the
single-head self-attention block. Initialisation follows the official code: Xavier-uniform
weights ("fan_avg" variance scaling), zero biases, and zero for the last layer of every residual
branch (`init_scale=0`), so each block starts as the identity.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def init_layer(layer: nn.Conv2d | nn.Linear, zero: bool = False) -> nn.Module:
    """Xavier-uniform weights (zero if `zero`), zero bias; returns the layer."""
    if zero:
        nn.init.zeros_(layer.weight)
    else:
        nn.init.xavier_uniform_(layer.weight)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


def conv(in_ch: int, out_ch: int, kernel: int = 3, zero: bool = False) -> nn.Conv2d:
    return init_layer(nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2), zero)


def linear(in_dim: int, out_dim: int, zero: bool = False) -> nn.Linear:
    return init_layer(nn.Linear(in_dim, out_dim), zero)


def num_groups(channels: int) -> int:
    """GroupNorm groups used by DDPM++: min(channels // 4, 32)."""
    return min(channels // 4, 32)


def group_norm(channels: int) -> nn.GroupNorm:
    groups = num_groups(channels)
    if groups < 1 or channels % groups:
        raise ValueError(
            f"GroupNorm cannot split {channels} channels into min(C // 4, 32) = {groups} groups; "
            "choose model.channels and model.channel_mult so that every width and every sum of "
            "two skip-connected widths is a multiple of 4 (and of 32 when >= 128)")
    return nn.GroupNorm(groups, channels, eps=1e-6)


class GaussianFourierProjection(nn.Module):
    """Random Fourier features [sin(2 pi W c), cos(2 pi W c)] with fixed W ~ N(0, scale^2).

    W is a buffer, not a parameter (Tancik et al. 2020; used by NCSN++ for log sigma).
    """

    def __init__(self, embedding_size: int, scale: float = 16.0):
        super().__init__()
        self.register_buffer("W", torch.randn(embedding_size) * scale)

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        proj = cond[:, None].to(self.W.dtype) * self.W[None, :] * (2 * math.pi)
        return torch.cat([proj.sin(), proj.cos()], dim=-1)


class PositionalEmbedding(nn.Module):
    """Sinusoidal embedding of a scalar (Vaswani et al. 2017; DDPM `get_timestep_embedding`)."""

    def __init__(self, dim: int, max_positions: int = 10000):
        super().__init__()
        self.dim, self.max_positions = dim, max_positions

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        half, dtype = self.dim // 2, torch.promote_types(cond.dtype, torch.float32)
        freqs = torch.exp(
            torch.arange(half, device=cond.device, dtype=dtype)
            * (-math.log(self.max_positions) / max(half - 1, 1))
        )
        args = cond[:, None].to(dtype) * freqs[None, :]
        emb = torch.cat([args.sin(), args.cos()], dim=-1)
        return F.pad(emb, (0, self.dim % 2))


EMBEDDINGS = ("fourier", "positional")


class NoiseEmbedding(nn.Module):
    """Embedding of the scalar noise condition followed by Dense-SiLU-Dense (as in DDPM++).

    `kind` is "fourier" (for log sigma, NCSN++) or "positional" (for 999 t, DDPM++).
    """

    def __init__(self, kind: str, dim: int, out_dim: int, fourier_scale: float = 16.0):
        super().__init__()
        if kind == "fourier":
            self.embed, width = GaussianFourierProjection(dim, fourier_scale), 2 * dim
        elif kind == "positional":
            self.embed, width = PositionalEmbedding(dim), dim
        else:
            raise ValueError(f"model.embedding={kind!r} is unknown; use one of {EMBEDDINGS}")
        self.dense0, self.dense1 = linear(width, out_dim), linear(out_dim, out_dim)

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        emb = self.embed(cond.reshape(-1)).to(self.dense0.weight.dtype)
        return self.dense1(F.silu(self.dense0(emb)))


class ResBlock(nn.Module):
    """BigGAN-style residual block of DDPM++ (`ResnetBlockBigGANpp`, fir=False).

    h = conv(act(GN(x))) (+ resampling) + Dense(act(temb)); h = conv0(dropout(act(GN(h))));
    out = (skip(x) + h) / sqrt(2). Up-sampling is nearest-neighbour, down-sampling 2x2 average
    pooling, applied to both branches.
    """

    def __init__(self, in_ch: int, out_ch: int | None = None, temb_dim: int = 0,
                 dropout: float = 0.0, up: bool = False, down: bool = False):
        super().__init__()
        out_ch = out_ch or in_ch
        self.up, self.down = up, down
        self.norm0 = group_norm(in_ch)
        self.conv0 = conv(in_ch, out_ch)
        self.temb = linear(temb_dim, out_ch) if temb_dim else None
        self.norm1 = group_norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv1 = conv(out_ch, out_ch, zero=True)
        self.skip = conv(in_ch, out_ch, 1) if (in_ch != out_ch or up or down) else None

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            return F.interpolate(x, scale_factor=2.0, mode="nearest")
        if self.down:
            return F.avg_pool2d(x, 2)
        return x

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        h = self._resample(F.silu(self.norm0(x)))
        x = self._resample(x)
        h = self.conv0(h)
        if self.temb is not None:
            h = h + self.temb(F.silu(temb))[:, :, None, None]
        h = self.conv1(self.dropout(F.silu(self.norm1(h))))
        if self.skip is not None:
            x = self.skip(x)
        return (x + h) / math.sqrt(2.0)


class AttnBlock(nn.Module):
    """Single-head self-attention over pixels (DDPM `AttnBlockpp`), skip rescaled by 1/sqrt(2)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = group_norm(channels)
        self.qkv = conv(channels, 3 * channels, 1)
        self.out = conv(channels, channels, 1, zero=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hgt, wid = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, hgt * wid).transpose(-1, -2).unbind(1)
        h = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(c)) v
        h = self.out(h.transpose(-1, -2).reshape(b, c, hgt, wid))
        return (x + h) / math.sqrt(2.0)
