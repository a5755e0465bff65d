"""Mixed precision for training: bf16 / fp16 autocast of the forward pass, loss scaling for fp16.

The weights, the optimizer state and the EMA stay in fp32; only the forward pass (and so the
loss) runs in the lower precision. fp16 needs a CUDA GPU and loss scaling against gradient
underflow; bf16 keeps fp32's exponent range and needs neither.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from scoresde.stages.common import StageError

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str, device: torch.device) -> None:
    if precision == "fp16" and device.type != "cuda":
        raise StageError(f"train.precision fp16 needs a CUDA GPU (device is {device}); on the "
                         "CPU use bf16 or fp32")


def autocast(precision: str, device: torch.device):
    """Mixed-precision forward pass (bf16 or fp16 autocast); fp32 runs as is."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(precision: str, device: torch.device):
    """fp16 needs loss scaling against gradient underflow; bf16 and fp32 do not."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None
