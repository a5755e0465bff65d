"""Noise-conditional classifier p_t(y | x(t)) for class-conditional sampling (App. I.1).

The encoder half of the DDPM++ U-Net (the same residual blocks and time embedding as the score
model: Fourier features of log sigma for VE, positional features of 999 t for VP / sub-VP),
global average pooling and a linear head. Trained with cross-entropy on x(t) drawn from the SDE's
perturbation kernel, t ~ U(eps, T) (:func:`classifier_loss`), for VE, VP and sub-VP alike (the
paper's classifier is a Wide-ResNet for VE only).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..sde import SDE
from ..utils import Generator, append_dims, rand, randn
from .layers import NoiseEmbedding, ResBlock, conv, group_norm


class NoiseConditionalClassifier(nn.Module):
    """logits(x, cond): (B, C, H, W), (B,) -> (B, num_classes); cond = sde.noise_condition(t)."""

    def __init__(self, image_size: int, in_channels: int = 1, num_classes: int = 10,
                 channels: int = 16, channel_mult: Sequence[int] = (1, 2),
                 num_res_blocks: int = 1, dropout: float = 0.0, embedding: str = "positional",
                 fourier_scale: float = 16.0):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"a classifier needs num_classes >= 2, got {num_classes}")
        if image_size % 2 ** (len(channel_mult) - 1):
            raise ValueError(f"image_size={image_size} cannot be halved {len(channel_mult) - 1} "
                             "times; use fewer channel_mult entries")
        self.num_classes = num_classes
        temb_dim = 4 * channels
        self.embed = NoiseEmbedding(embedding, channels, temb_dim, fourier_scale)
        self.conv_in = conv(in_channels, channels)
        blocks, ch = [], channels
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                blocks.append(ResBlock(ch, channels * mult, temb_dim=temb_dim, dropout=dropout))
                ch = channels * mult
            if level != len(channel_mult) - 1:
                blocks.append(ResBlock(ch, down=True, temb_dim=temb_dim, dropout=dropout))
        self.blocks = nn.ModuleList(blocks)
        self.norm_out = group_norm(ch)
        self.head = nn.Linear(ch, num_classes)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        cond = cond.reshape(-1).expand(x.shape[0]) if cond.numel() == 1 else cond
        temb = self.embed(cond)
        h = self.conv_in(x)
        for block in self.blocks:
            h = block(h, temb)
        return self.head(F.silu(self.norm_out(h)).mean(dim=(2, 3)))


def classifier_loss(model: nn.Module, sde: SDE, x: torch.Tensor, labels: torch.Tensor,
                    generator: Generator = None, eps: float = 1e-5) -> torch.Tensor:
    """Cross-entropy of the classifier on x(t) = a(t) x(0) + s(t) z, t ~ U(eps, T)."""
    t = eps + (sde.T - eps) * rand((x.shape[0],), generator, x.device, x.dtype)
    z = randn(x.shape, generator, x.device, x.dtype)
    xt = append_dims(sde.mean_coeff(t), x.ndim) * x + append_dims(sde.std(t), x.ndim) * z
    return F.cross_entropy(model(xt, sde.noise_condition(t)), labels)


def class_log_prob(model: nn.Module, sde: SDE, labels: torch.Tensor | int):
    """log p_t(y | x) of the classifier as ``log_prob_fn(x, t) -> (B,)`` for conditional_score.

    ``labels``: one class for the whole batch, or one per sample; ValueError outside the classes.
    """
    labels = torch.as_tensor(labels)
    k = int(model.num_classes)
    if labels.numel() == 0 or int(labels.min()) < 0 or int(labels.max()) >= k:
        raise ValueError(f"class label(s) {labels.tolist()} outside the classifier's classes "
                         f"0..{k - 1}")

    def log_prob(x, t):
        logp = F.log_softmax(model(x, sde.noise_condition(t)), dim=1)
        idx = labels.to(x.device).expand(x.shape[0]) if labels.ndim == 0 else labels.to(x.device)
        return logp.gather(1, idx[:, None].long())[:, 0]

    return log_prob
