"""Score networks: the DDPM++ U-Net for images, an MLP for 2-D data, the official NCSN++ /
DDPM++ layout (released checkpoints), and weight EMA."""

from __future__ import annotations

import inspect

import torch
from torch import nn

from .ema import EMA
from .mlp import MLP
from .ncsnpp import ScoreNCSNpp
from .unet import UNet

ARCHS: dict[str, type[nn.Module]] = {"unet": UNet, "mlp": MLP, "ncsnpp": ScoreNCSNpp}

__all__ = ["ARCHS", "EMA", "MLP", "UNet", "build_model", "count_params", "to_device"]


def build_model(config: dict) -> nn.Module:
    """Build a network from {"arch": "unet"|"mlp"|"ncsnpp", **constructor keyword arguments}.

    Lists (as YAML gives them) are turned into tuples; unknown arch or keys raise ValueError.
    """
    kwargs = dict(config)
    arch = kwargs.pop("arch", None)
    if arch not in ARCHS:
        raise ValueError(f"model.arch={arch!r} is unknown; use one of {sorted(ARCHS)}")
    cls = ARCHS[arch]
    allowed = _keyword_names(cls)
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise ValueError(f"model.{unknown[0]} is not an option of arch {arch!r}; "
                         f"valid keys: {sorted(allowed)}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    return cls(**kwargs)


def _keyword_names(cls: type) -> set[str]:
    """Constructor keywords of `cls`, following `**kwargs` into its base classes."""
    names: set[str] = set()
    for klass in cls.__mro__:
        params = inspect.signature(klass.__init__).parameters.values()
        names |= {p.name for p in params if p.name != "self"
                  and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            return names
    return names


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def to_device(model: nn.Module, device: torch.device | str) -> nn.Module:
    """``model`` moved to ``device``; on the CPU its convolution weights in channels-last (NHWC)
    memory format, so that oneDNN's convolutions skip a layout reorder before and after every
    layer (the activations follow the weights' format; values are unchanged, the results equal to
    rounding). ``benchmarks/bench_layout.py`` measures the gain side by side."""
    model = model.to(device)
    if torch.device(device).type == "cpu":
        model = model.to(memory_format=torch.channels_last)
    return model
