"""A plain implementation of our U-Net and training step, written the way the official score_sde_pytorch
code writes DDPM++ (``models/ncsnpp.py``, ``layerspp.py``, ``layers.py``, ``losses.py``, ``ema.py``),
as the reference the training benchmark times ours against (issue 8).

It is the same function as :class:`scoresde.models.UNet`: :func:`from_ours` builds the plain network
from one of ours and copies its weights, and :func:`output_error` checks that the two agree. What
differs is only how the code is written, as the official code writes it:

- a flat ``all_modules`` list walked with an index (``m_idx``), attention decided at run time from
  ``h.shape[-1]``;
- the attention block's 1x1 projections are ``NIN`` layers (a dense layer over channels: permute to
  channels-last, ``einsum`` with a weight ``W`` of shape (in, out), permute back), and attention is
  written out with ``einsum`` and ``softmax`` (no fused ``scaled_dot_product_attention``);
- 2x up/down-sampling without FIR as ``naive_upsample_2d`` (reshape + repeat) and
  ``naive_downsample_2d`` (reshape + mean);
- the loss of ``get_sde_loss_fn``, ``torch.optim.Adam`` with default arguments (on CPU: the
  per-parameter for-loop), ``clip_grad_norm_``, and the ``ExponentialMovingAverage`` of ``ema.py`` (a
  Python loop of ``s.sub_((1 - decay) * (s - p))`` over the parameters).

The noise embeddings compute exactly what ours compute (the Fourier phase as ``x W (2 pi)``, so that
the two agree to float rounding at large phases).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


# --- layers (layers.py / layerspp.py / up_or_down_sampling.py) ------------------------------------
def default_init(tensor: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Variance scaling, fan_avg, uniform (Xavier-uniform times sqrt(scale)); ~0 when scale is 0."""
    scale = 1e-10 if scale == 0 else scale
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(tensor)
    bound = math.sqrt(3.0 * scale / ((fan_in + fan_out) / 2))
    with torch.no_grad():
        return tensor.uniform_(-bound, bound)


def conv3x3(in_planes: int, out_planes: int, init_scale: float = 1.0) -> nn.Conv2d:
    conv = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=True)
    default_init(conv.weight, init_scale)
    nn.init.zeros_(conv.bias)
    return conv


def conv1x1(in_planes: int, out_planes: int, init_scale: float = 1.0) -> nn.Conv2d:
    conv = nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=1, padding=0, bias=True)
    default_init(conv.weight, init_scale)
    nn.init.zeros_(conv.bias)
    return conv


def dense(in_dim: int, out_dim: int) -> nn.Linear:
    layer = nn.Linear(in_dim, out_dim)
    default_init(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def contract_inner(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Contract the last axis of ``x`` with the first of ``y`` (an einsum)."""
    return torch.einsum("bhwc,cd->bhwd", x, y)


class NIN(nn.Module):
    """Network-in-network: a dense layer over the channels of an NCHW tensor."""

    def __init__(self, in_dim: int, num_units: int, init_scale: float = 0.1):
        super().__init__()
        self.W = nn.Parameter(default_init(torch.empty(num_units, in_dim), init_scale).t().contiguous())
        self.b = nn.Parameter(torch.zeros(num_units))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        y = contract_inner(x, self.W) + self.b
        return y.permute(0, 3, 1, 2)


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=min(channels // 4, 32), num_channels=channels, eps=1e-6)


def naive_upsample_2d(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    _N, C, H, W = x.shape
    x = torch.reshape(x, (-1, C, H, 1, W, 1))
    x = x.repeat(1, 1, 1, factor, 1, factor)
    return torch.reshape(x, (-1, C, H * factor, W * factor))


def naive_downsample_2d(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    _N, C, H, W = x.shape
    x = torch.reshape(x, (-1, C, H // factor, factor, W // factor, factor))
    return torch.mean(x, dim=(3, 5))


class GaussianFourierProjection(nn.Module):
    """Gaussian Fourier features; ``W`` is a frozen parameter, as in the official code."""

    def __init__(self, embedding_size: int = 256, scale: float = 1.0):
        super().__init__()
        self.W = nn.Parameter(torch.randn(embedding_size) * scale, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_proj = x[:, None] * self.W[None, :] * (2 * np.pi)
        return torch.cat([torch.sin(x_proj), torch.cos(x_proj)], dim=-1)


def get_timestep_embedding(timesteps: torch.Tensor, embedding_dim: int, max_positions: int = 10000):
    half_dim = embedding_dim // 2
    emb = math.log(max_positions) / max(half_dim - 1, 1)
    emb = torch.exp(torch.arange(half_dim, dtype=torch.float32, device=timesteps.device) * -emb)
    emb = timesteps.float()[:, None] * emb[None, :]
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=1)
    if embedding_dim % 2 == 1:
        emb = F.pad(emb, (0, 1), mode="constant")
    return emb


class AttnBlockpp(nn.Module):
    """Channel-wise self-attention with NIN projections, skip rescaled by 1/sqrt(2)."""

    def __init__(self, channels: int, skip_rescale: bool = True, init_scale: float = 0.0):
        super().__init__()
        self.GroupNorm_0 = group_norm(channels)
        self.NIN_0 = NIN(channels, channels)
        self.NIN_1 = NIN(channels, channels)
        self.NIN_2 = NIN(channels, channels)
        self.NIN_3 = NIN(channels, channels, init_scale=init_scale)
        self.skip_rescale = skip_rescale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        h = self.GroupNorm_0(x)
        q = self.NIN_0(h)
        k = self.NIN_1(h)
        v = self.NIN_2(h)
        w = torch.einsum("bchw,bcij->bhwij", q, k) * (int(C) ** (-0.5))
        w = torch.reshape(w, (B, H, W, H * W))
        w = F.softmax(w, dim=-1)
        w = torch.reshape(w, (B, H, W, H, W))
        h = torch.einsum("bhwij,bcij->bchw", w, v)
        h = self.NIN_3(h)
        if not self.skip_rescale:
            return x + h
        return (x + h) / np.sqrt(2.0)


class ResnetBlockBigGANpp(nn.Module):
    """BigGAN residual block of DDPM++ without FIR (naive resampling), skip rescaled by 1/sqrt(2)."""

    def __init__(self, act, in_ch: int, out_ch: int | None = None, temb_dim: int | None = None,
                 up: bool = False, down: bool = False, dropout: float = 0.1, skip_rescale: bool = True,
                 init_scale: float = 0.0):
        super().__init__()
        out_ch = out_ch if out_ch else in_ch
        self.GroupNorm_0 = group_norm(in_ch)
        self.up = up
        self.down = down
        self.Conv_0 = conv3x3(in_ch, out_ch)
        if temb_dim is not None:
            self.Dense_0 = dense(temb_dim, out_ch)
        self.GroupNorm_1 = group_norm(out_ch)
        self.Dropout_0 = nn.Dropout(dropout)
        self.Conv_1 = conv3x3(out_ch, out_ch, init_scale=init_scale)
        if in_ch != out_ch or up or down:
            self.Conv_2 = conv1x1(in_ch, out_ch)
        self.skip_rescale = skip_rescale
        self.act = act
        self.in_ch = in_ch
        self.out_ch = out_ch

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.act(self.GroupNorm_0(x))
        if self.up:
            h = naive_upsample_2d(h, factor=2)
            x = naive_upsample_2d(x, factor=2)
        elif self.down:
            h = naive_downsample_2d(h, factor=2)
            x = naive_downsample_2d(x, factor=2)
        h = self.Conv_0(h)
        if temb is not None:
            h += self.Dense_0(self.act(temb))[:, :, None, None]
        h = self.act(self.GroupNorm_1(h))
        h = self.Dropout_0(h)
        h = self.Conv_1(h)
        if self.in_ch != self.out_ch or self.up or self.down:
            x = self.Conv_2(x)
        if not self.skip_rescale:
            return x + h
        return (x + h) / np.sqrt(2.0)


# --- the network (ncsnpp.py, DDPM++ settings: no FIR, no progressive paths) -----------------------
class PlainUNet(nn.Module):
    """DDPM++ as the official ``NCSNpp`` builds it for ``cifar10_ddpmpp_continuous``; takes the same
    arguments as :class:`scoresde.models.UNet` and computes the same function."""

    def __init__(self, image_size: int, in_channels: int = 1, channels: int = 32, channel_mult=(1, 2),
                 num_res_blocks: int = 1, attn_resolutions=(), dropout: float = 0.0,
                 embedding: str = "positional", fourier_scale: float = 16.0):
        super().__init__()
        self.act = act = nn.SiLU()
        self.nf = nf = channels
        self.num_res_blocks = num_res_blocks
        self.attn_resolutions = tuple(attn_resolutions)
        self.num_resolutions = num_resolutions = len(channel_mult)
        self.all_resolutions = all_resolutions = [image_size // (2**i) for i in range(num_resolutions)]
        self.embedding_type = embedding

        modules = []
        if embedding == "fourier":
            modules.append(GaussianFourierProjection(embedding_size=nf, scale=fourier_scale))
            embed_dim = 2 * nf
        elif embedding == "positional":
            embed_dim = nf
        else:
            raise ValueError(f"embedding type {embedding} unknown.")
        modules.append(dense(embed_dim, nf * 4))
        modules.append(dense(nf * 4, nf * 4))

        def ResnetBlock(in_ch, out_ch=None, up=False, down=False):
            return ResnetBlockBigGANpp(act=act, in_ch=in_ch, out_ch=out_ch, temb_dim=nf * 4, up=up,
                                       down=down, dropout=dropout)

        modules.append(conv3x3(in_channels, nf))
        hs_c = [nf]
        in_ch = nf
        for i_level in range(num_resolutions):
            for _i_block in range(num_res_blocks):
                out_ch = nf * channel_mult[i_level]
                modules.append(ResnetBlock(in_ch=in_ch, out_ch=out_ch))
                in_ch = out_ch
                if all_resolutions[i_level] in attn_resolutions:
                    modules.append(AttnBlockpp(channels=in_ch))
                hs_c.append(in_ch)
            if i_level != num_resolutions - 1:
                modules.append(ResnetBlock(in_ch=in_ch, down=True))
                hs_c.append(in_ch)

        in_ch = hs_c[-1]
        modules.append(ResnetBlock(in_ch=in_ch))
        modules.append(AttnBlockpp(channels=in_ch))
        modules.append(ResnetBlock(in_ch=in_ch))

        for i_level in reversed(range(num_resolutions)):
            for _i_block in range(num_res_blocks + 1):
                out_ch = nf * channel_mult[i_level]
                modules.append(ResnetBlock(in_ch=in_ch + hs_c.pop(), out_ch=out_ch))
                in_ch = out_ch
            if all_resolutions[i_level] in attn_resolutions:
                modules.append(AttnBlockpp(channels=in_ch))
            if i_level != 0:
                modules.append(ResnetBlock(in_ch=in_ch, up=True))
        assert not hs_c

        modules.append(group_norm(in_ch))
        modules.append(conv3x3(in_ch, in_channels, init_scale=0.0))
        self.all_modules = nn.ModuleList(modules)

    def forward(self, x: torch.Tensor, time_cond: torch.Tensor) -> torch.Tensor:
        modules = self.all_modules
        m_idx = 0
        if self.embedding_type == "fourier":
            temb = modules[m_idx](time_cond)  # the condition is log sigma already
            m_idx += 1
        else:
            temb = get_timestep_embedding(time_cond, self.nf)
        temb = modules[m_idx](temb)
        m_idx += 1
        temb = modules[m_idx](self.act(temb))
        m_idx += 1

        hs = [modules[m_idx](x)]
        m_idx += 1
        for i_level in range(self.num_resolutions):
            for _i_block in range(self.num_res_blocks):
                h = modules[m_idx](hs[-1], temb)
                m_idx += 1
                if h.shape[-1] in self.attn_resolutions:
                    h = modules[m_idx](h)
                    m_idx += 1
                hs.append(h)
            if i_level != self.num_resolutions - 1:
                h = modules[m_idx](hs[-1], temb)
                m_idx += 1
                hs.append(h)

        h = hs[-1]
        h = modules[m_idx](h, temb)
        m_idx += 1
        h = modules[m_idx](h)
        m_idx += 1
        h = modules[m_idx](h, temb)
        m_idx += 1

        for i_level in reversed(range(self.num_resolutions)):
            for _i_block in range(self.num_res_blocks + 1):
                h = modules[m_idx](torch.cat([h, hs.pop()], dim=1), temb)
                m_idx += 1
            if h.shape[-1] in self.attn_resolutions:
                h = modules[m_idx](h)
                m_idx += 1
            if i_level != 0:
                h = modules[m_idx](h, temb)
                m_idx += 1
        assert not hs

        h = self.act(modules[m_idx](h))
        m_idx += 1
        h = modules[m_idx](h)
        m_idx += 1
        assert m_idx == len(modules)
        return h


# --- ours -> plain --------------------------------------------------------------------------------
def config_of(unet) -> dict:
    """The constructor arguments of one of our U-Nets, read off its modules."""
    from scoresde.models.layers import GaussianFourierProjection as OurFourier

    channels = unet.conv_in.out_channels
    levels = 1 + sum(bool(stage[0].down) for stage in unet.down)
    num_res_blocks = (len(unet.down) - (levels - 1)) // levels
    mult, attn, i = [], [], 0
    for level in range(levels):
        for b in range(num_res_blocks):
            stage = unet.down[i]
            i += 1
            if b == 0:
                mult.append(stage[0].conv0.out_channels // channels)
            if len(stage) > 1 and unet.image_size // 2**level not in attn:
                attn.append(unet.image_size // 2**level)
        i += level != levels - 1
    fourier = isinstance(unet.embed.embed, OurFourier)
    return dict(image_size=unet.image_size, in_channels=unet.in_channels, channels=channels,
                channel_mult=tuple(mult), num_res_blocks=num_res_blocks, attn_resolutions=tuple(attn),
                dropout=unet.down[0][0].dropout.p, embedding="fourier" if fourier else "positional")


def _ours_in_order(unet) -> list[nn.Module]:
    """Our modules in the order the official code lists them in ``all_modules``."""
    seq = [unet.embed.embed] if unet.embed.embed.__class__.__name__ == "GaussianFourierProjection" else []
    seq += [unet.embed.dense0, unet.embed.dense1, unet.conv_in]
    for stage in [*unet.down, unet.mid, *unet.up]:
        seq += list(stage)
    return seq + [unet.norm_out, unet.conv_out]


@torch.no_grad()
def _copy(ours: nn.Module, plain: nn.Module) -> None:
    name = type(ours).__name__
    if name == "GaussianFourierProjection":
        plain.W.copy_(ours.W)
    elif isinstance(ours, nn.Linear | nn.Conv2d | nn.GroupNorm):
        plain.load_state_dict(ours.state_dict())
    elif name == "ResBlock":
        pairs = [("norm0", "GroupNorm_0"), ("conv0", "Conv_0"), ("temb", "Dense_0"),
                 ("norm1", "GroupNorm_1"), ("conv1", "Conv_1"), ("skip", "Conv_2")]
        for a, b in pairs:
            if getattr(ours, a) is not None:
                getattr(plain, b).load_state_dict(getattr(ours, a).state_dict())
        assert (ours.up, ours.down) == (plain.up, plain.down)
    elif name == "AttnBlock":
        plain.GroupNorm_0.load_state_dict(ours.norm.state_dict())
        c = ours.out.out_channels
        w, b = ours.qkv.weight[:, :, 0, 0], ours.qkv.bias  # (3c, c): rows q, k, v
        for j, nin in enumerate((plain.NIN_0, plain.NIN_1, plain.NIN_2)):
            nin.W.copy_(w[j * c:(j + 1) * c].t())
            nin.b.copy_(b[j * c:(j + 1) * c])
        plain.NIN_3.W.copy_(ours.out.weight[:, :, 0, 0].t())  # conv (out, in, 1, 1) -> NIN W (in, out)
        plain.NIN_3.b.copy_(ours.out.bias)
    else:
        raise TypeError(f"no mapping for {name}")


def from_ours(unet) -> PlainUNet:
    """A :class:`PlainUNet` computing the same function as our ``unet`` (weights copied, same mode)."""
    plain = PlainUNet(**config_of(unet))
    ours = _ours_in_order(unet)
    if len(ours) != len(plain.all_modules):
        raise ValueError(f"{len(ours)} modules in ours, {len(plain.all_modules)} in the plain network")
    for a, b in zip(ours, plain.all_modules, strict=True):
        _copy(a, b)
    p = next(unet.parameters())
    return plain.to(device=p.device, dtype=p.dtype).train(unet.training)


@torch.no_grad()
def output_error(unet, batch: int = 4, seed: int = 0) -> float:
    """max |ours(x, c) - plain(x, c)| / max |ours(x, c)| on random images and noise conditions."""
    plain = from_ours(unet).eval()
    was = unet.training
    unet.eval()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, unet.in_channels, unet.image_size, unet.image_size, generator=gen)
    fourier = type(unet.embed.embed).__name__ == "GaussianFourierProjection"
    # VE: log sigma for sigma in [0.01, 50]; VP: 999 t for t in [0, 1]
    c = torch.rand(batch, generator=gen)
    c = math.log(0.01) + c * math.log(5000) if fourier else 999 * c
    p = next(unet.parameters())
    x, c = x.to(p), c.to(p)
    ours = unet(x, c)
    unet.train(was)
    return ((ours - plain(x, c)).abs().max() / ours.abs().max()).item()


# --- the training step (losses.py, optimization_manager, ema.py) ----------------------------------
class ExponentialMovingAverage:
    """EMA of the parameters as the official ``ema.py``: a Python loop of ``sub_`` over them."""

    def __init__(self, parameters, decay: float, use_num_updates: bool = True):
        if decay < 0.0 or decay > 1.0:
            raise ValueError("Decay must be between 0 and 1")
        self.decay = decay
        self.num_updates = 0 if use_num_updates else None
        self.shadow_params = [p.clone().detach() for p in parameters if p.requires_grad]

    def update(self, parameters) -> None:
        decay = self.decay
        if self.num_updates is not None:
            self.num_updates += 1
            decay = min(decay, (1 + self.num_updates) / (10 + self.num_updates))
        one_minus_decay = 1.0 - decay
        with torch.no_grad():
            parameters = [p for p in parameters if p.requires_grad]
            for s_param, param in zip(self.shadow_params, parameters, strict=True):
                s_param.sub_(one_minus_decay * (s_param - param))


def get_score_fn(sde, model):
    """The network to a score, as the official ``get_score_fn`` (continuous training)."""
    from scoresde import VESDE

    def score_fn(x, t):
        if isinstance(sde, VESDE):
            labels = torch.log(sde.marginal_prob(torch.zeros_like(x), t)[1])
            std = sde.marginal_prob(torch.zeros_like(x), t)[1]
            return model(x, labels) / std[:, None, None, None]
        labels = t * 999
        score = model(x, labels)
        std = sde.marginal_prob(torch.zeros_like(x), t)[1]
        return -score / std[:, None, None, None]

    return score_fn


def get_sde_loss_fn(sde, reduce_mean: bool = True, eps: float = 1e-5):
    reduce_op = torch.mean if reduce_mean else (lambda *args, **kwargs: 0.5 * torch.sum(*args, **kwargs))

    def loss_fn(model, batch):
        score_fn = get_score_fn(sde, model)
        t = torch.rand(batch.shape[0], device=batch.device) * (sde.T - eps) + eps
        z = torch.randn_like(batch)
        mean, std = sde.marginal_prob(batch, t)
        perturbed_data = mean + std[:, None, None, None] * z
        score = score_fn(perturbed_data, t)
        losses = torch.square(score * std[:, None, None, None] + z)
        losses = reduce_op(losses.reshape(losses.shape[0], -1), dim=-1)
        return torch.mean(losses)

    return loss_fn


def optimization_manager(lr: float, warmup: int = 0, grad_clip: float = 1.0):
    def optimize_fn(optimizer, params, step, lr=lr, warmup=warmup, grad_clip=grad_clip):
        if warmup > 0:
            for g in optimizer.param_groups:
                g["lr"] = lr * np.minimum(step / warmup, 1.0)
        if grad_clip >= 0:
            torch.nn.utils.clip_grad_norm_(params, max_norm=grad_clip)
        optimizer.step()

    return optimize_fn


def make_train_step(model: nn.Module, sde, lr: float = 2e-4, ema_rate: float = 0.999,
                    grad_clip: float = 1.0, warmup: int = 0):
    """``(step_fn, state)``: ``step_fn(batch)`` does one official-style training step, returns the loss."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    state = dict(model=model, optimizer=optimizer, step=0,
                 ema=ExponentialMovingAverage(model.parameters(), decay=ema_rate))
    loss_fn = get_sde_loss_fn(sde)
    optimize_fn = optimization_manager(lr, warmup, grad_clip)

    def step_fn(batch: torch.Tensor) -> torch.Tensor:
        optimizer.zero_grad()
        loss = loss_fn(model, batch)
        loss.backward()
        optimize_fn(optimizer, model.parameters(), step=state["step"])
        state["step"] += 1
        state["ema"].update(model.parameters())
        return loss

    return step_fn, state
