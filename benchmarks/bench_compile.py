"""torch.compile (Inductor) of the score network against eager, side by side in one process: the
training step, the sampling forward at the digits and Fashion-MNIST sizes, the likelihood's forward
+ VJP at both sizes and a whole likelihood RK45 solve at the digits size; compile time apart.

The networks are the pipeline's: ``params.yaml``'s model (8 x 8 digits, 16 channels, mult (1, 2)) and
``config/fashion_mnist_cpu.yaml``'s (28 x 28, 32 channels, mult (1, 2, 2)), VP (positional
embedding), on the CPU in channels-last weights (``scoresde.models.to_device``), compiled as the
stages compile them (``scoresde.models.compiled.compiled``: ``dynamic=False``, one batch size), with
glibc's malloc keeping freed memory as in the stages (``keep_freed_memory``; without it eager pays
page faults on every activation and compiled looks up to a quarter better than in a stage).
Batches are the stages': training 128, sampling 400 (digits: ``sample.n_samples``) / 500
(Fashion-MNIST: ``sample.batch_size``), likelihood 297 (the digits test split) / 128. Eager and
compiled alternate round by round (the order swapped every round); the table gives each one's
median and the median of the per-round ratios eager / compiled (above 1: compiled is faster), with
the load average (``os.getloadavg``) before and after, since this machine is shared. Compile time:
"cold" is the first call in an empty Inductor cache (a temporary ``TORCHINDUCTOR_CACHE_DIR``) less one
steady call; "warm" the same after ``torch._dynamo.reset()``, the graphs then loaded from the disk
cache, as a later job of the DAG loads them.

    python benchmarks/bench_compile.py [--quick] [--threads 1]

The whole-DAG comparison (default config and config/fashion_mnist_cpu.yaml, against the previous
commit, alternating) is ``benchmarks/dag/compare_commits.sh`` (docs/pipeline.md, "compile").
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import yaml
from benchlib import Check, Report, Table, cli_main, dsm_step

ROOT = Path(__file__).resolve().parents[1]
GOALS = {"training step": 1.3, "sampling forward": 1.3}


def model_config(size: int) -> dict:
    """build_model's config of the pipeline's network at the digits (8) or Fashion-MNIST (28) size."""
    model = dict(yaml.safe_load((ROOT / "params.yaml").read_text())["model"])
    if size == 28:
        model.update(yaml.safe_load((ROOT / "config/fashion_mnist_cpu.yaml").read_text())["model"])
    return {**model, "embedding": "positional", "image_size": size, "in_channels": 1}


def network(size: int, train: bool = False, seed: int = 0):
    """The network with small random output weights (the zero-initialised output conv would make the
    work trivial), channels-last on the CPU as the stages place it."""
    from scoresde.models import build_model, to_device

    torch.manual_seed(seed)
    net = build_model(model_config(size))
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                p.normal_(0.0, 0.05)
    net = to_device(net, "cpu")
    return net.train() if train else net.eval().requires_grad_(False)


def training(size: int, batch: int, compile_: bool):
    """One training step as stages/train/loop.py takes it (DSM loss, backward, clip, fused Adam)."""
    from scoresde import VPSDE
    from scoresde.models.compiled import compiled

    net = network(size, train=True)
    forward = compiled(net, compile_, batch)
    opt = torch.optim.Adam(net.parameters(), lr=2e-4, fused=True)
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(batch, 1, size, size, generator=gen) * 2 - 1
    sde = VPSDE()

    def step():
        return dsm_step(forward, net, opt, sde, x, gen)

    return step


def sampling(size: int, batch: int, compile_: bool):
    from scoresde.models.compiled import compiled

    net = compiled(network(size), compile_, batch)
    gen = torch.Generator().manual_seed(2)
    x, t = torch.randn(batch, 1, size, size, generator=gen), torch.rand(batch, generator=gen) * 999

    def forward():
        with torch.no_grad():
            return net(x, t)

    return forward


def likelihood_rhs(size: int, batch: int, compile_: bool):
    """One evaluation of the likelihood ODE's right-hand side: forward + one VJP (Hutchinson)."""
    from scoresde.models.compiled import compiled

    net = compiled(network(size), compile_, batch)
    gen = torch.Generator().manual_seed(3)
    x, t = torch.randn(batch, 1, size, size, generator=gen), torch.rand(batch, generator=gen) * 999
    v = torch.randn(x.shape, generator=gen)

    def rhs():
        y = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(net(y, t), y, grad_outputs=v)
        return (g * v).flatten(1).sum(1)

    return rhs


_TRAINED: dict = {}


def likelihood_solve(size: int, batch: int, compile_: bool):
    """The likelihood stage's uniform bound of ``batch`` digits test images (RK45, rtol = atol = 1e-5,
    one Rademacher probe), with a network trained 100 steps (an untrained one is rough and needs
    several times the NFE)."""
    from benchlib import trained_unet

    from scoresde import VPSDE, get_score_fn
    from scoresde.data import load_dataset
    from scoresde.likelihood import discrete_log_likelihood
    from scoresde.models import to_device
    from scoresde.models.compiled import compiled

    sde = VPSDE()
    if "net" not in _TRAINED:
        _TRAINED["net"] = to_device(trained_unet(sde, channels=model_config(8)["channels"]),
                                    "cpu").requires_grad_(False)
    net = compiled(_TRAINED["net"], compile_)
    k = load_dataset("digits", "test").x[:batch]
    score = get_score_fn(sde, net)

    def solve():
        gens = [torch.Generator().manual_seed(i) for i in range(len(k))]
        bound, nfe = discrete_log_likelihood(score, sde, k, 17, scale=2.0, shift=-1.0, generator=gens)
        return bound.mean().detach(), nfe

    return solve


def timed(fn, keep: list | None = None) -> float:
    t0 = time.perf_counter()
    out = fn()
    elapsed = time.perf_counter() - t0
    if keep is not None:
        keep.append(out)
    return elapsed


def race(eager, fast, repeats: int, warmup: bool = True) -> tuple[list[float], list[float]]:
    """Alternating rounds (order swapped each round), after one warm-up call each."""
    if warmup:
        eager(), fast()
    te, tc = [], []
    for r in range(repeats):
        if r % 2:
            tc.append(timed(fast))
            te.append(timed(eager))
        else:
            te.append(timed(eager))
            tc.append(timed(fast))
    return te, tc


def run(quick: bool = False) -> Report:
    from scoresde.models.compiled import inductor_cache
    from scoresde.stages.common import keep_freed_memory

    keep_freed_memory()  # as every stage does (setup_torch): eager's activations without page faults
    cache = tempfile.mkdtemp(prefix="inductor-bench-")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache  # cold: an empty cache, whatever was set before
    inductor_cache()
    work = [("training step", training, 8, 128, 7), ("training step", training, 28, 128, 5),
            ("sampling forward", sampling, 8, 400, 9), ("sampling forward", sampling, 28, 500, 5),
            ("likelihood forward + VJP", likelihood_rhs, 8, 297, 9),
            ("likelihood forward + VJP", likelihood_rhs, 28, 128, 7),
            ("likelihood RK45 solve", likelihood_solve, 8, 297, 3)]
    if quick:
        work = [(w, f, 8, 8, 2) for w, f, size, _, _ in work if size == 8]
    load_before = os.getloadavg()
    table = Table("torch.compile vs eager on the CPU (median of alternating rounds)",
                  ["work", "image", "batch", "eager ms", "compiled ms", "eager / compiled (paired)",
                   "paired range", "compile cold s", "compile warm s", "max abs difference", "load (1 min)"])
    checks = []
    for name, make, size, batch, repeats in work:
        eager, fast = make(size, batch, False), make(size, batch, True)
        outs: list = []
        first = timed(eager, outs)  # the same first call (a training step: the same first step)
        cold = timed(fast, outs)
        torch._dynamo.reset()
        warm = timed(fast)  # graphs recompiled from the disk cache
        a, b = (o[0] if isinstance(o, tuple) else o for o in outs)
        diff = float((a.double() - b.double()).abs().max())
        slow = first > 10  # a whole solve: the calls above were the warm-up
        te, tc = race(eager, fast, repeats, warmup=not slow)
        ratios = [e / c for e, c in zip(te, tc, strict=True)]
        steady = statistics.median(tc)
        paired = statistics.median(ratios)
        compile_s = ["-", "-"] if slow else [max(cold - steady, 0.0), max(warm - steady, 0.0)]
        table.rows.append([name, f"{size}x{size}", batch, statistics.median(te) * 1e3, steady * 1e3,
                           paired, f"{min(ratios):.2f}-{max(ratios):.2f}", *compile_s, diff,
                           os.getloadavg()[0]])
        if name in GOALS:
            checks.append(Check(f"{name} {size}x{size}: compiled / eager time", 1 / paired,
                                1 / GOALS[name], note=f"goal: {GOALS[name]}x faster"))
        print(f"{name} {size}x{size}: eager/compiled {paired:.3f}, cold {cold:.1f}s, "
              f"warm {warm:.1f}s, load {os.getloadavg()}", flush=True)
    load_after = os.getloadavg()
    table.notes += [
        f"load average (1, 5, 15 min) before {tuple(round(v, 2) for v in load_before)}, after "
        f"{tuple(round(v, 2) for v in load_after)} on {os.cpu_count()} CPUs, "
        f"{torch.get_num_threads()} torch thread(s); torch {torch.__version__}",
        "max abs difference: eager against compiled output (training: the first step's loss; "
        "likelihood: v^T J v per row, the solve's mean bound in nats)",
        "compile cold / warm: the first call's time less one steady call; cold = empty Inductor cache, "
        "warm = graphs from the disk cache after torch._dynamo.reset() (a later job of the DAG); the solve "
        "runs the forward + VJP graph of the row above it (compiled there), its NFE may differ by a few",
        "paired range: the smallest and largest per-round ratio eager / compiled",
    ]
    return Report("compile", tables=[table], checks=checks)


if __name__ == "__main__":
    cli_main(run, __doc__)
