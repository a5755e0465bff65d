"""FIR up/down-sampling of StyleGAN2 (Karras et al. 2020), as used by NCSN++, in plain PyTorch.

Everything is built on one primitive, ``upfirdn2d``: insert ``up - 1`` zeros between samples,
pad, convolve with a 2-D FIR filter, keep every ``down``-th sample. NCSN++ uses the separable
filter k = [1, 3, 3, 1] (the outer product k k^T, normalised to sum 1), which anti-aliases the
resampling. No compiled CUDA op is needed: the convolution is a depthwise ``F.conv2d``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def fir_kernel_2d(k: Sequence[float], gain: float = 1.0) -> torch.Tensor:
    """The 2-D filter ``gain * k k^T / sum(k k^T)`` (float32) from a 1-D filter ``k``."""
    k = torch.as_tensor(k, dtype=torch.float64)
    if k.ndim == 1:
        k = torch.outer(k, k)
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"FIR kernel must be 1-D or square 2-D, got shape {tuple(k.shape)}")
    return (k / k.sum() * gain).float()


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1,
              pad: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Upsample by zero insertion, pad (``pad[0]`` before, ``pad[1]`` after, both axes), convolve
    with ``kernel`` (true convolution, i.e. the kernel flipped), then take every ``down``-th
    sample. Output size per axis: ``(H * up + pad[0] + pad[1] - kh) // down + 1``."""
    B, C, H, W = x.shape
    if up > 1:
        z = x.new_zeros(B, C, H * up, W * up)
        z[:, :, ::up, ::up] = x
        x = z
    x = F.pad(x, (pad[0], pad[1], pad[0], pad[1]))
    w = torch.flip(kernel.to(x), (0, 1)).expand(C, 1, *kernel.shape)
    x = F.conv2d(x, w, groups=C)
    return x[:, :, ::down, ::down] if down > 1 else x


def upsample_2d(x: torch.Tensor, k: Sequence[float] = (1, 3, 3, 1), factor: int = 2) -> torch.Tensor:
    """Upsample by ``factor`` with FIR filter ``k`` (gain factor^2 keeps constants constant)."""
    kernel = fir_kernel_2d(k, gain=factor**2)
    p = kernel.shape[0] - factor
    return upfirdn2d(x, kernel, up=factor, pad=((p + 1) // 2 + factor - 1, p // 2))


def downsample_2d(x: torch.Tensor, k: Sequence[float] = (1, 3, 3, 1), factor: int = 2) -> torch.Tensor:
    """Low-pass with FIR filter ``k`` then keep every ``factor``-th pixel."""
    kernel = fir_kernel_2d(k)
    p = kernel.shape[0] - factor
    return upfirdn2d(x, kernel, down=factor, pad=((p + 1) // 2, p // 2))


def upsample_conv_2d(x: torch.Tensor, w: torch.Tensor, k: Sequence[float] = (1, 3, 3, 1),
                     factor: int = 2) -> torch.Tensor:
    """Fused FIR upsampling and convolution with ``w`` (out, in, kh, kw): a transposed
    convolution with stride ``factor`` of the spatially flipped ``w``, then the FIR filter.

    (The official PyTorch port flips with a negative-step slice, which torch rejects; this is the
    StyleGAN2 definition it transcribes.)
    """
    kernel = fir_kernel_2d(k, gain=factor**2)
    conv = w.shape[-1]
    p = (kernel.shape[0] - factor) - (conv - 1)
    w_t = torch.flip(w, (2, 3)).transpose(0, 1)
    x = F.conv_transpose2d(x, w_t, stride=factor)
    return upfirdn2d(x, kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1))


def conv_downsample_2d(x: torch.Tensor, w: torch.Tensor, k: Sequence[float] = (1, 3, 3, 1),
                       factor: int = 2) -> torch.Tensor:
    """Fused FIR filtering and strided convolution with ``w``: pad once, filter, conv stride 2."""
    kernel = fir_kernel_2d(k)
    p = (kernel.shape[0] - factor) + (w.shape[-1] - 1)
    x = upfirdn2d(x, kernel, pad=((p + 1) // 2, p // 2))
    return F.conv2d(x, w, stride=factor)


def naive_upsample_2d(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Nearest-neighbour upsampling (each pixel repeated factor x factor)."""
    return x.repeat_interleave(factor, dim=2).repeat_interleave(factor, dim=3)


def naive_downsample_2d(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Average pooling over factor x factor blocks."""
    return F.avg_pool2d(x, factor, stride=factor)


class FIRConv2d(nn.Module):
    """A k x k convolution fused with FIR up- or down-sampling (official ``Conv2d`` layout:
    parameters ``weight`` (out, in, k, k) and ``bias`` (out,))."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, up: bool = False,
                 down: bool = False, resample_kernel: Sequence[float] = (1, 3, 3, 1),
                 use_bias: bool = True):
        super().__init__()
        if up and down:
            raise ValueError("FIRConv2d resamples up or down, not both")
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"FIRConv2d kernel must be odd and positive, got {kernel}")
        self.weight = nn.Parameter(torch.zeros(out_ch, in_ch, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if use_bias else None
        self.up, self.down, self.resample_kernel = up, down, tuple(resample_kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            x = upsample_conv_2d(x, self.weight, self.resample_kernel)
        elif self.down:
            x = conv_downsample_2d(x, self.weight, self.resample_kernel)
        else:
            x = F.conv2d(x, self.weight, padding=self.weight.shape[-1] // 2)
        return x if self.bias is None else x + self.bias.reshape(1, -1, 1, 1)
