"""The score network compiled by ``torch.compile`` (Inductor), behind one ``compile`` setting per stage.

``compile: auto | true | false``. ``true`` compiles wherever torch.compile works (CPU with a C++
compiler, CUDA); ``false`` never; ``auto`` compiles only where it was measured to win on the CPU
(:data:`AUTO`, figures in docs/pipeline.md, "compile"): sampling at Fashion-MNIST size (28 x 28)
and above, where the compiled forward is 1.34-1.39x faster and a job runs the network for minutes;
not sampling at the digits size (8 x 8: 1.16-1.19x, but a sample job runs the network for under a
minute and the first compilation costs about 24 s on two cores), not training (a step 0.92-1.05x),
not the likelihood (forward + VJP 0.99-1.05x in the benchmark, a whole solve 0.83-1.17x, the
first compilation 35-50 s), not checkpoint selection (seconds of network time). On CUDA auto compiles
every stage (not measured here: no GPU; set ``compile: false`` where it loses).

Shapes are fixed (``dynamic=False``): :class:`FixedBatch` runs the compiled network on one batch
size only, the first it sees (a stage's full batch); a smaller batch is padded with copies of its
last row and the padding cut from the output, a larger one split. The U-Net treats every row
alone (GroupNorm is per sample), so padding changes no row's output, and a stage's last partial
batch does not compile the network again. The input is passed in contiguous (NCHW) layout so its
strides never change either. Compiled graphs are cached on disk by Inductor in
``TORCHINDUCTOR_CACHE_DIR`` (:func:`inductor_cache`: ``.cache/inductor`` of the working directory
unless the user set it), so the pipeline's jobs compile each graph once and later jobs load it
(about 2 s instead of 30-60 s).

Compiled and eager differ by rounding (fused kernels sum in another order): about 1e-6 relative on
one forward, within the tolerances the tests state (tests/test_compile.py). The compiled kernels
are deterministic: the same input gives the same output, run to run.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

SETTINGS = ("auto", True, False)

# auto: where compiling was measured to win (benchmarks/bench_compile.py, docs/pipeline.md).
# None: never on this device type; an int: on for images of at least that many pixels per channel.
AUTO: dict[str, dict[str, int | None]] = {
    "cpu": {"train": None, "select": None, "sample": 28 * 28, "likelihood": None},
    "cuda": {"train": 0, "select": 0, "sample": 0, "likelihood": 0},
}
STAGES = tuple(AUTO["cpu"])
CACHE_DIR = Path(".cache") / "inductor"


def check_setting(setting) -> bool | str:
    """``setting`` as ``"auto"``, True or False (the strings "true" / "false" accepted);
    ValueError naming it otherwise."""
    if setting in ("true", "false"):
        return setting == "true"
    if setting == "auto" or setting is True or setting is False:
        return setting
    raise ValueError(f"compile={setting!r} is not one of auto, true, false")


def use_compile(setting, stage: str, device: torch.device | str,
                image_shape: tuple[int, ...] | None = None) -> bool:
    """Whether ``stage`` (train, select, sample, likelihood) compiles its network on ``device``:
    ``setting`` when it is True or False, else the measured rule :data:`AUTO` for the image
    shape ``(C, H, W)`` (None: too small to tell, off on the CPU)."""
    setting = check_setting(setting)
    if stage not in STAGES:
        raise ValueError(f"stage={stage!r} is not one of {', '.join(STAGES)}")
    if setting != "auto":
        return setting
    min_pixels = AUTO.get(torch.device(device).type, {}).get(stage)
    if min_pixels is None:
        return False
    pixels = image_shape[-1] * image_shape[-2] if image_shape and len(image_shape) >= 2 else 0
    return pixels >= min_pixels


def inductor_cache(root: str | os.PathLike | None = None) -> str:
    """Point Inductor's on-disk cache at ``root`` (default ``.cache/inductor`` of the working
    directory, the repository root under Snakemake) unless ``TORCHINDUCTOR_CACHE_DIR`` is set
    already; returns the directory in use. Every job of a DAG then shares one cache."""
    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(root or CACHE_DIR).resolve())
    return os.environ["TORCHINDUCTOR_CACHE_DIR"]


class FixedBatch:
    """``fn(x, cond)`` evaluated on batches of one size only: the first call's batch size (or
    ``batch_size``); smaller batches are padded with copies of their last row, larger ones split,
    so that a compiled ``fn`` (``dynamic=False``) sees one shape and never compiles again. ``fn``
    must treat rows independently (the score networks do)."""

    def __init__(self, fn, batch_size: int | None = None):
        self.fn, self.batch_size = fn, batch_size

    def __call__(self, x: torch.Tensor, cond: torch.Tensor,
                 labels: torch.Tensor | None = None) -> torch.Tensor:
        """``labels`` (a class-conditional network's, one per row) are padded and split with
        the rows; None is passed on as None."""
        n = x.shape[0]
        if self.batch_size is None:
            self.batch_size = n
        size = self.batch_size
        x = x.contiguous()
        cond = cond.reshape(-1).expand(n) if cond.numel() == 1 else cond
        if labels is not None:
            labels = torch.as_tensor(labels, device=x.device).reshape(-1)
            labels = labels.expand(n) if labels.numel() == 1 else labels
        extra = (lambda ls: {}) if labels is None else (lambda ls: {"labels": ls.contiguous()})
        if n == size:
            return self.fn(x, cond.contiguous(), **extra(labels))
        outs = []
        for start in range(0, n, size):
            xs, cs = x[start:start + size], cond[start:start + size]
            ls = labels[start:start + size] if labels is not None else None
            k = xs.shape[0]
            if k < size:
                xs = torch.cat([xs, xs[-1:].detach().expand(size - k, *xs.shape[1:])]).contiguous()
                cs = torch.cat([cs, cs[-1:].expand(size - k)])
                ls = torch.cat([ls, ls[-1:].expand(size - k)]) if ls is not None else None
            outs.append(self.fn(xs, cs.contiguous(), **extra(ls))[:k])
        return torch.cat(outs)


def compiled(net: nn.Module, enabled: bool = True, batch_size: int | None = None,
             mode: str | None = None):
    """``net`` itself when not ``enabled``, else a callable ``(x, cond) -> net(x, cond)`` running
    ``torch.compile(net, dynamic=False, mode=mode)`` on one batch size (:class:`FixedBatch`).
    The returned callable shares ``net``'s parameters (train ``net``, save ``net.state_dict()``)."""
    if not enabled:
        return net
    return FixedBatch(torch.compile(net, dynamic=False, mode=mode), batch_size)
