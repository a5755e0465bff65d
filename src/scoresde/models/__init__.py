"""Score networks: the DDPM++ U-Net for images, an MLP for 2-D data, and weight EMA."""

from __future__ import annotations

import inspect

from torch import nn

from .ema import EMA
from .mlp import MLP
from .unet import UNet

ARCHS: dict[str, type[nn.Module]] = {"unet": UNet, "mlp": MLP}

__all__ = ["ARCHS", "EMA", "MLP", "UNet", "build_model", "count_params"]


def build_model(config: dict) -> nn.Module:
    """Build a network from {"arch": "unet"|"mlp", **constructor keyword arguments}.

    Lists (as YAML gives them) are turned into tuples; unknown arch or keys raise ValueError.
    """
    kwargs = dict(config)
    arch = kwargs.pop("arch", None)
    if arch not in ARCHS:
        raise ValueError(f"model.arch={arch!r} is unknown; use one of {sorted(ARCHS)}")
    cls = ARCHS[arch]
    allowed = set(inspect.signature(cls).parameters)
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise ValueError(f"model.{unknown[0]} is not an option of arch {arch!r}; "
                         f"valid keys: {sorted(allowed)}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    return cls(**kwargs)


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
