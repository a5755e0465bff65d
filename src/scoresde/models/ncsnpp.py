"""NCSN++ / DDPM++ (Song et al. 2021, App. H) with the official score_sde_pytorch layout.

One class covers both released families:

- DDPM++ (VP / sub-VP): ``fir=False``, positional embedding of 999 t, BigGAN blocks,
  ``skip_rescale``, no progressive paths, output = predicted noise z.
- NCSN++ (VE): ``fir=True`` ([1, 3, 3, 1] FIR resampling), Gaussian Fourier embedding of
  log sigma, ``progressive_input='residual'``, ``scale_by_sigma`` (output = score = net / sigma).

All modules live in one ``all_modules`` list built in the official order, so an official state
dict (after stripping DataParallel's ``module.``) loads with ``strict=True`` and the EMA's
``shadow_params`` map onto the trainable parameters in order. ``NCSNpp.forward(x, time_cond)`` is
the official network function (``time_cond`` = 999 t for VP, sigma(t) for VE);
``ScoreNCSNpp`` adapts it to this package's ``model(x, sde.noise_condition(t))`` convention.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
from torch import nn

from .layerspp import (
    ACTIVATIONS,
    AttnBlockpp,
    Combine,
    Downsample,
    GaussianFourierProjection,
    ResnetBlockBigGANpp,
    ResnetBlockDDPMpp,
    Upsample,
    conv3x3,
    dense,
    group_norm,
    timestep_embedding,
)

CHOICES = {"progressive": ("none", "output_skip", "residual"),
           "progressive_input": ("none", "input_skip", "residual"),
           "progressive_combine": ("sum", "cat"), "resblock_type": ("biggan", "ddpm"),
           "embedding_type": ("fourier", "positional"), "nonlinearity": tuple(ACTIVATIONS)}


class NCSNpp(nn.Module):
    """The official ``ncsnpp`` network; arguments are the official ``config.model`` keys plus
    ``image_size``, ``num_channels`` and ``centered`` (``config.data``). With
    ``centered=False`` the input is in [0, 1] and mapped to [-1, 1] inside, as officially."""

    def __init__(self, image_size: int, num_channels: int = 3, centered: bool = True,
                 nf: int = 128, ch_mult: Sequence[int] = (1, 2, 2, 2), num_res_blocks: int = 4,
                 attn_resolutions: Sequence[int] = (16,), dropout: float = 0.1,
                 resamp_with_conv: bool = True, conditional: bool = True, fir: bool = False,
                 fir_kernel: Sequence[float] = (1, 3, 3, 1), skip_rescale: bool = True,
                 resblock_type: str = "biggan", progressive: str = "none",
                 progressive_input: str = "none", progressive_combine: str = "sum",
                 embedding_type: str = "positional", init_scale: float = 0.0,
                 fourier_scale: float = 16.0, nonlinearity: str = "swish",
                 scale_by_sigma: bool = False, sigma_min: float = 0.01, sigma_max: float = 50.0,
                 num_scales: int = 1000):
        super().__init__()
        opts = {"progressive": progressive, "progressive_input": progressive_input,
                "progressive_combine": progressive_combine, "resblock_type": resblock_type,
                "embedding_type": embedding_type, "nonlinearity": nonlinearity}
        for key, value in opts.items():
            if value not in CHOICES[key]:
                raise ValueError(f"model.{key}={value!r} is not one of {CHOICES[key]}")
        if image_size % 2 ** (len(ch_mult) - 1):
            raise ValueError(f"image_size {image_size} must be divisible by "
                             f"2^(len(ch_mult) - 1) = {2 ** (len(ch_mult) - 1)}")
        self.act = act = ACTIVATIONS[nonlinearity]()
        self.register_buffer("sigmas", torch.exp(torch.linspace(
            math.log(sigma_max), math.log(sigma_min), num_scales, dtype=torch.float64)))
        self.nf, self.num_res_blocks = nf, num_res_blocks
        self.attn_resolutions = tuple(attn_resolutions)
        self.num_resolutions = len(ch_mult)
        self.conditional, self.skip_rescale = conditional, skip_rescale
        self.resblock_type, self.embedding_type = resblock_type, embedding_type
        self.progressive, self.progressive_input = progressive, progressive_input
        self.centered, self.scale_by_sigma = centered, scale_by_sigma
        resolutions = [image_size // 2**i for i in range(self.num_resolutions)]
        fir_kernel = tuple(fir_kernel)
        combiner = functools.partial(Combine, method=progressive_combine)
        Attn = functools.partial(AttnBlockpp, init_scale=init_scale, skip_rescale=skip_rescale)
        Up = functools.partial(Upsample, with_conv=resamp_with_conv, fir=fir,
                               fir_kernel=fir_kernel)
        Down = functools.partial(Downsample, with_conv=resamp_with_conv, fir=fir,
                                 fir_kernel=fir_kernel)
        if progressive == "output_skip":
            self.pyramid_upsample = Upsample(fir=fir, fir_kernel=fir_kernel, with_conv=False)
        pyramid_up = functools.partial(Upsample, fir=fir, fir_kernel=fir_kernel, with_conv=True)
        if progressive_input == "input_skip":
            self.pyramid_downsample = Downsample(fir=fir, fir_kernel=fir_kernel, with_conv=False)
        pyramid_down = functools.partial(Downsample, fir=fir, fir_kernel=fir_kernel,
                                         with_conv=True)
        block_kw = {"act": act, "dropout": dropout, "init_scale": init_scale,
                    "skip_rescale": skip_rescale, "temb_dim": nf * 4}
        if resblock_type == "ddpm":
            Block = functools.partial(ResnetBlockDDPMpp, **block_kw)
        else:
            Block = functools.partial(ResnetBlockBigGANpp, fir=fir, fir_kernel=fir_kernel,
                                      **block_kw)

        mods: list[nn.Module] = []
        if embedding_type == "fourier":
            mods.append(GaussianFourierProjection(embedding_size=nf, scale=fourier_scale))
        embed_dim = 2 * nf if embedding_type == "fourier" else nf
        if conditional:
            mods += [dense(embed_dim, nf * 4), dense(nf * 4, nf * 4)]

        # Downsampling path
        pyramid_ch = num_channels
        mods.append(conv3x3(num_channels, nf))
        hs_c, in_ch = [nf], nf
        for level, res in enumerate(resolutions):
            for _ in range(num_res_blocks):
                out_ch = nf * ch_mult[level]
                mods.append(Block(in_ch=in_ch, out_ch=out_ch))
                in_ch = out_ch
                if res in self.attn_resolutions:
                    mods.append(Attn(channels=in_ch))
                hs_c.append(in_ch)
            if level == self.num_resolutions - 1:
                continue
            mods.append(Down(in_ch=in_ch) if resblock_type == "ddpm"
                        else Block(down=True, in_ch=in_ch))
            if progressive_input == "input_skip":
                mods.append(combiner(dim1=pyramid_ch, dim2=in_ch))
                in_ch = 2 * in_ch if progressive_combine == "cat" else in_ch
            elif progressive_input == "residual":
                mods.append(pyramid_down(in_ch=pyramid_ch, out_ch=in_ch))
                pyramid_ch = in_ch
            hs_c.append(in_ch)

        # Middle
        in_ch = hs_c[-1]
        mods += [Block(in_ch=in_ch), Attn(channels=in_ch), Block(in_ch=in_ch)]

        # Upsampling path
        pyramid_ch = 0
        for level in reversed(range(self.num_resolutions)):
            for _ in range(num_res_blocks + 1):
                out_ch = nf * ch_mult[level]
                mods.append(Block(in_ch=in_ch + hs_c.pop(), out_ch=out_ch))
                in_ch = out_ch
            if resolutions[level] in self.attn_resolutions:
                mods.append(Attn(channels=in_ch))
            if progressive == "output_skip":
                mods += [group_norm(in_ch), conv3x3(in_ch, num_channels, init_scale=init_scale)]
                pyramid_ch = num_channels
            elif progressive == "residual" and level == self.num_resolutions - 1:
                mods += [group_norm(in_ch), conv3x3(in_ch, in_ch)]
                pyramid_ch = in_ch
            elif progressive == "residual":
                mods.append(pyramid_up(in_ch=pyramid_ch, out_ch=in_ch))
                pyramid_ch = in_ch
            if level != 0:
                mods.append(Up(in_ch=in_ch) if resblock_type == "ddpm"
                            else Block(in_ch=in_ch, up=True))
        assert not hs_c
        if progressive != "output_skip":
            mods += [group_norm(in_ch), conv3x3(in_ch, num_channels, init_scale=init_scale)]
        self.all_modules = nn.ModuleList(mods)

    def _embed(self, mods, time_cond: torch.Tensor):
        """(temb, used_sigmas): Fourier features of log sigma, or sinusoidal features of t."""
        if self.embedding_type == "fourier":
            used_sigmas = time_cond
            temb = next(mods)(torch.log(used_sigmas))
        else:
            used_sigmas = self.sigmas[time_cond.long()]
            temb = timestep_embedding(time_cond, self.nf)
        if self.conditional:
            temb = next(mods)(temb)
            temb = next(mods)(self.act(temb))
        else:
            temb = None
        return temb, used_sigmas

    def forward(self, x: torch.Tensor, time_cond: torch.Tensor) -> torch.Tensor:
        """The official network: 999 t (VP) or sigma(t) (VE) in; z-prediction (VP) or score
        (VE with ``scale_by_sigma``) out."""
        h, used_sigmas = self.features(x, time_cond)
        if self.scale_by_sigma:
            h = h / used_sigmas.reshape(-1, *([1] * (x.ndim - 1)))
        return h

    def features(self, x: torch.Tensor, time_cond: torch.Tensor):
        """(output before ``scale_by_sigma``, used_sigmas)."""
        mods = iter(self.all_modules)
        temb, used_sigmas = self._embed(mods, time_cond)
        if not self.centered:
            x = 2 * x - 1.0
        pyramid = x if self.progressive_input != "none" else None
        hs = [next(mods)(x)]
        for level in range(self.num_resolutions):
            for _ in range(self.num_res_blocks):
                h = next(mods)(hs[-1], temb)
                if h.shape[-1] in self.attn_resolutions:
                    h = next(mods)(h)
                hs.append(h)
            if level == self.num_resolutions - 1:
                continue
            h = next(mods)(hs[-1]) if self.resblock_type == "ddpm" else next(mods)(hs[-1], temb)
            if self.progressive_input == "input_skip":
                pyramid = self.pyramid_downsample(pyramid)
                h = next(mods)(pyramid, h)
            elif self.progressive_input == "residual":
                pyramid = self._merge(next(mods)(pyramid), h)
                h = pyramid
            hs.append(h)

        h = next(mods)(hs[-1], temb)
        h = next(mods)(h)
        h = next(mods)(h, temb)

        pyramid = None
        for level in reversed(range(self.num_resolutions)):
            for _ in range(self.num_res_blocks + 1):
                h = next(mods)(torch.cat([h, hs.pop()], dim=1), temb)
            if h.shape[-1] in self.attn_resolutions:
                h = next(mods)(h)
            if self.progressive == "output_skip":
                skip = self._norm_act_conv(mods, h)
                pyramid = skip if pyramid is None else self.pyramid_upsample(pyramid) + skip
            elif self.progressive == "residual" and level == self.num_resolutions - 1:
                pyramid = self._norm_act_conv(mods, h)
            elif self.progressive == "residual":
                pyramid = self._merge(next(mods)(pyramid), h)
                h = pyramid
            if level != 0:
                h = next(mods)(h) if self.resblock_type == "ddpm" else next(mods)(h, temb)
        assert not hs

        h = pyramid if self.progressive == "output_skip" else self._norm_act_conv(mods, h)
        assert next(mods, None) is None
        return h, used_sigmas

    def _norm_act_conv(self, mods, h: torch.Tensor) -> torch.Tensor:
        norm, conv = next(mods), next(mods)
        return conv(self.act(norm(h)))

    def _merge(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a + b) / math.sqrt(2.0) if self.skip_rescale else a + b


class ScoreNCSNpp(NCSNpp):
    """NCSNpp called as ``model(x, sde.noise_condition(t))`` so that this package's
    ``losses.get_score_fn`` gives the official score (same state dict as ``NCSNpp``).

    VP / sub-VP: the condition is 999 t, the official input; the output is the official one and
    ``get_score_fn`` forms -out / s(t). VE: the condition is log sigma(t); the network gets
    sigma = exp(cond) and returns its output *before* ``scale_by_sigma`` (``get_score_fn``
    divides by sigma(t)), or times sigma when the official net does not divide.
    """

    def __init__(self, sde: str, **kwargs):
        if sde not in ("ve", "vp", "subvp"):
            raise ValueError(f"sde={sde!r} must be 've', 'vp' or 'subvp'")
        super().__init__(**kwargs)
        self.sde = sde

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if self.sde != "ve":
            return super().forward(x, cond)
        sigma = torch.exp(cond)
        h, _ = self.features(x, sigma)
        return h if self.scale_by_sigma else h * sigma.reshape(-1, *([1] * (x.ndim - 1)))
