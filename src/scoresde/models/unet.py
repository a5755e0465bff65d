"""DDPM++ U-Net (Song et al., ICLR 2021, appendix H.1; official `ncsnpp.py` with the
`cifar10_ddpmpp_continuous` settings: BigGAN residual blocks, no FIR, no progressive paths).

Paper size for CIFAR-10: `UNet(32, 3, channels=128, channel_mult=(1, 2, 2, 2), num_res_blocks=4,
attn_resolutions=(16,), dropout=0.1, embedding="positional")`, about 62M parameters. A tiny
`UNet(8, 1, channels=16, channel_mult=(1, 2))` suits 8x8 digits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .layers import EMBEDDINGS, AttnBlock, NoiseEmbedding, ResBlock, conv, group_norm


def check_unet_args(image_size: int, channels: int, channel_mult: Sequence[int],
                    attn_resolutions: Sequence[int], dropout: float, embedding: str) -> None:
    """Raise ValueError naming the offending key and the fix for a U-Net that cannot be built.

    (Widths GroupNorm cannot split are reported by `layers.group_norm` while building.)"""
    levels = len(channel_mult)
    if levels < 1 or any(int(m) < 1 for m in channel_mult):
        raise ValueError(f"model.channel_mult={tuple(channel_mult)} must be a non-empty list of "
                         "positive integers, e.g. [1, 2]")
    if image_size < 1 or image_size % 2 ** (levels - 1):
        raise ValueError(
            f"model.image_size={image_size} cannot be halved {levels - 1} times "
            f"(len(model.channel_mult)={levels}); use an image size divisible by "
            f"{2 ** (levels - 1)} or fewer channel_mult entries")
    resolutions = [image_size // 2**i for i in range(levels)]
    bad = [r for r in attn_resolutions if r not in resolutions]
    if bad:
        raise ValueError(f"model.attn_resolutions has {bad}, which this U-Net never reaches; "
                         f"pick from its resolutions {resolutions} (or use [])")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"model.dropout={dropout} must be in [0, 1)")
    if embedding not in EMBEDDINGS:
        raise ValueError(f"model.embedding={embedding!r} is unknown; use one of {EMBEDDINGS}")


class UNet(nn.Module):
    """Noise-conditional U-Net s(x, c): (B, C, H, W), (B,) -> (B, C, H, W).

    `cond` is the scalar noise condition (log sigma for VE, 999 t for VP / sub-VP). It is
    embedded (Gaussian Fourier features or sinusoidal) and passed through a 2-layer MLP of
    width 4 * channels, added inside every residual block. The output conv is zero-initialised,
    so the untrained network outputs 0.

    With ``num_classes`` = K > 0 the network is class-conditional, s(x, c, y), for
    classifier-free guidance (Ho & Salimans 2022): a learned embedding of the label y in
    0..K-1, or of "no label" (y = K, also what ``labels=None`` means), is added to the time
    embedding. The embedding starts at zero, so the untrained network ignores the label.
    """

    def __init__(self, image_size: int, in_channels: int = 1, channels: int = 32,
                 channel_mult: Sequence[int] = (1, 2), num_res_blocks: int = 1,
                 attn_resolutions: Sequence[int] = (), dropout: float = 0.0,
                 embedding: str = "positional", fourier_scale: float = 16.0,
                 num_classes: int = 0):
        super().__init__()
        check_unet_args(image_size, channels, channel_mult, attn_resolutions, dropout, embedding)
        if num_classes < 0 or int(num_classes) != num_classes:
            raise ValueError(f"model.num_classes={num_classes} must be a whole number >= 0 (0 = "
                             "unconditional)")
        self.image_size, self.in_channels = image_size, in_channels
        self.num_classes = int(num_classes)
        temb_dim = 4 * channels
        self.embed = NoiseEmbedding(embedding, channels, temb_dim, fourier_scale)
        self.label_embed = None
        if self.num_classes:  # row K is "no label"
            self.label_embed = nn.Embedding(self.num_classes + 1, temb_dim)
            nn.init.zeros_(self.label_embed.weight)
        block = dict(temb_dim=temb_dim, dropout=dropout)
        attn_at = {image_size // 2**i for i in range(len(channel_mult))} & set(attn_resolutions)

        self.conv_in = conv(in_channels, channels)
        self.down, skips, ch = nn.ModuleList(), [channels], channels
        for level, mult in enumerate(channel_mult):
            res = image_size // 2**level
            for _ in range(num_res_blocks):
                self.down.append(self._stage(ResBlock(ch, channels * mult, **block), res, attn_at))
                ch = channels * mult
                skips.append(ch)
            if level != len(channel_mult) - 1:
                self.down.append(nn.ModuleList([ResBlock(ch, down=True, **block)]))
                skips.append(ch)

        self.mid = nn.ModuleList([ResBlock(ch, **block), AttnBlock(ch), ResBlock(ch, **block)])

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = image_size // 2**level
            for i in range(num_res_blocks + 1):
                blk = ResBlock(ch + skips.pop(), channels * mult, **block)
                ch = channels * mult
                last = i == num_res_blocks
                self.up.append(self._stage(blk, res, attn_at if last else set()))
            if level != 0:
                self.up.append(nn.ModuleList([ResBlock(ch, up=True, **block)]))
        assert not skips

        self.norm_out = group_norm(ch)
        self.conv_out = conv(ch, in_channels, zero=True)

    @staticmethod
    def _stage(block: ResBlock, res: int, attn_at: set[int]) -> nn.ModuleList:
        """A residual block, followed by self-attention when `res` is in `attn_at`."""
        return nn.ModuleList([block, AttnBlock(block.conv1.out_channels)] if res in attn_at
                             else [block])

    def _labels(self, labels: torch.Tensor | None, batch: int, device) -> torch.Tensor:
        """(B,) labels in 0..K (K = no label; None: no label for the whole batch)."""
        if labels is None:
            return torch.full((batch,), self.num_classes, dtype=torch.long, device=device)
        labels = torch.as_tensor(labels, device=device).long().reshape(-1)
        return labels.expand(batch) if labels.numel() == 1 else labels

    @staticmethod
    def _run(stage: nn.ModuleList, h: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = stage[0](h, temb)
        return stage[1](h) if len(stage) > 1 else h

    def forward(self, x: torch.Tensor, cond: torch.Tensor,
                labels: torch.Tensor | None = None) -> torch.Tensor:
        cond = cond.reshape(-1).expand(x.shape[0]) if cond.numel() == 1 else cond
        temb = self.embed(cond)
        if self.label_embed is not None:
            temb = temb + self.label_embed(self._labels(labels, x.shape[0], temb.device))
        elif labels is not None:
            raise ValueError("this network is unconditional (model.num_classes = 0) and takes "
                             "no labels; train a class-conditional one for classifier-free "
                             "guidance")
        hs = [self.conv_in(x)]
        for stage in self.down:
            hs.append(self._run(stage, hs[-1], temb))
        h = self.mid[0](hs[-1], temb)
        h = self.mid[2](self.mid[1](h), temb)
        for stage in self.up:
            if not stage[0].up:  # up-sampling blocks take no skip connection
                h = torch.cat([h, hs.pop()], dim=1)
            h = self._run(stage, h, temb)
        assert not hs
        return self.conv_out(F.silu(self.norm_out(h)))
