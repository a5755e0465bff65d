"""Exponential moving average of model weights (Song et al. 2021 use rate 0.999 for VE,
0.9999 for VP / sub-VP), with the warm-up of the official `ema.py`:
decay_eff = min(decay, (1 + n) / (10 + n)), n = number of updates so far including this one."""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    """Shadow copy of a model's floating-point parameters and buffers."""

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True):
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"ema decay={decay} must be in [0, 1]")
        self.decay, self.warmup, self.num_updates = float(decay), bool(warmup), 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def current_decay(self) -> float:
        """The decay the next update will use."""
        n = self.num_updates + 1
        return min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """shadow <- d * shadow + (1 - d) * weights (integer buffers are copied)."""
        d = self.current_decay()
        shadows, weights = [], []
        for k, v in model.state_dict().items():
            s = self.shadow[k]
            if s.is_floating_point() or s.is_complex():
                shadows.append(s)
                weights.append(v.detach().to(s.dtype))
            else:
                s.copy_(v)
        if shadows:  # one call: the per-tensor lerp_ of each pair, without a Python loop
            torch._foreach_lerp_(shadows, weights, 1.0 - d)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Load the averaged weights into `model` (same architecture)."""
        model.load_state_dict(self.shadow)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "warmup": self.warmup, "num_updates": self.num_updates,
                "shadow": dict(self.shadow)}

    def load_state_dict(self, state: dict) -> None:
        missing = set(self.shadow) ^ set(state["shadow"])
        if missing:
            raise ValueError(f"EMA state does not match the model; differing keys: "
                             f"{sorted(missing)[:5]}")
        self.decay, self.warmup = float(state["decay"]), bool(state["warmup"])
        self.num_updates = int(state["num_updates"])
        for k, v in state["shadow"].items():
            self.shadow[k].copy_(v)
