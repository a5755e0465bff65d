"""Training throughput of our U-Net step against a plain (official-style) implementation of the same
network and loop; eager NCHW, channels_last, torch.compile (CPU, inductor), foreach Adam / EMA.

One step is what ``stages/train/loop.py`` does: DSM loss (eq. 7), backward, gradient clipping, Adam, EMA.
The reference, ``plain_unet.py``, is the same network (our weights copied into it, outputs checked
equal) written the way the official score_sde_pytorch code writes DDPM++ (NIN einsum layers, attention
with einsum + softmax, reshape-based resampling, a flat module list) with the official loop (its loss,
``torch.optim.Adam`` defaults, ``clip_grad_norm_``, the ``sub_``-loop EMA). The variants are timed in
alternation (blocks of steps, best block kept; ratios: median over rounds of back-to-back times, an
A/A copy of ours for the noise floor); peak memory is the resident-set high-water mark of a fresh
child process per variant. On a GPU machine the same script adds bf16 autocast (mixed precision) and
reports ``torch.cuda.max_memory_allocated``.

    python benchmarks/bench_training.py [--quick] [--threads 1]
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import plain_unet
import torch
from benchlib import Check, Report, Table, cli_main, default_unet, paired_ratio, race

from scoresde import VPSDE, dsm_loss
from scoresde.models import EMA, UNet

PLAIN = "plain (official-style network and loop)"
FOREACH = "ours + foreach Adam + foreach EMA"
FUSED = "ours + fused Adam + foreach EMA"
CPU_VARIANTS = ("eager", PLAIN, FOREACH, FUSED, "channels_last", "compile", "compile + channels_last")
GPU_VARIANTS = ("eager", PLAIN, FOREACH, FUSED, "channels_last", "bf16 autocast",
                "bf16 autocast + channels_last")
QUICK_VARIANTS = ("eager", PLAIN, FOREACH)
WHY_MEMORY = ("F.avg_pool2d in the down-sampling ResBlock saves its input for backward (one 32-channel "
              "8x8 activation, 1 MB at batch 128); the official reshape + mean saves nothing (measured: "
              "ours with reshape + mean has plain's peak)")


def foreach_ema_update(ema: EMA, model: torch.nn.Module):
    """``ema.update(model)`` as one ``torch._foreach_lerp_`` over the floating shadow tensors.

    The lists are built once: ``state_dict()`` tensors share storage with the parameters, which the
    optimizer updates in place.
    """
    weights = model.state_dict()
    floats = [k for k, s in ema.shadow.items() if s.is_floating_point()]
    others = [k for k in ema.shadow if k not in floats]
    shadows, current = [ema.shadow[k] for k in floats], [weights[k] for k in floats]

    @torch.no_grad()
    def update(_model=None) -> None:
        torch._foreach_lerp_(shadows, current, 1.0 - ema.current_decay())
        for k in others:
            ema.shadow[k].copy_(weights[k])
        ema.num_updates += 1

    return update


def make_step(variant: str, batch: int, device: str = "cpu", seed: int = 0):
    """A closure doing ``k`` training steps of the default U-Net (VP, 8x8 digits-sized)."""
    torch.manual_seed(seed)
    net = default_unet("vp").train().to(device)
    gen = torch.Generator(device=device).manual_seed(seed)
    x = torch.rand(batch, 1, 8, 8, generator=gen, device=device) * 2 - 1
    if variant == PLAIN:
        step_fn, _ = plain_unet.make_train_step(plain_unet.from_ours(net), VPSDE(), lr=2e-4,
                                                ema_rate=0.999, grad_clip=1.0)

        def plain_steps(k: int = 1):
            for _ in range(k):
                loss = step_fn(x)
            if device != "cpu":
                torch.cuda.synchronize()
            return loss.item()

        return plain_steps

    last = "channels_last" in variant
    if last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    model = torch.compile(net) if "compile" in variant else net
    amp = "autocast" in variant
    foreach, fused = variant == FOREACH, variant == FUSED
    sde, ema = VPSDE(), EMA(net, 0.999)
    opt = torch.optim.Adam(net.parameters(), lr=2e-4, foreach=foreach or None, fused=fused or None)
    ema_update = foreach_ema_update(ema, net) if foreach or fused else ema.update

    def steps(k: int = 1):
        for _ in range(k):
            with torch.autocast(device, dtype=torch.bfloat16, enabled=amp):
                loss = dsm_loss(model, sde, x, generator=gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            ema_update(net)
        if device != "cpu":
            torch.cuda.synchronize()
        return loss.item()

    return steps


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def reset_peak_rss() -> bool:
    """Reset the kernel's resident-set high-water mark (Linux: write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def peak_tensor_mb(steps) -> float | None:
    """Peak tensor memory of one step above what was allocated at its start (MB): the running sum of
    the CPU allocator's allocations and frees recorded by the profiler (``profile_memory=True``)."""
    try:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                    profile_memory=True) as prof:
            steps(1)
        events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                        key=lambda e: e.start_ns())
    except (AttributeError, RuntimeError):
        return None
    current = peak = 0
    for e in events:
        current += e.nbytes()
        peak = max(peak, current)
    return peak / 2**20


def child(variant: str, batch: int, n: int, threads: int) -> None:
    """Run in a fresh process: 2 warm-up (compile) steps, then ``n`` steps; print peak memory as JSON.

    The high-water mark is reset after the warm-up, so the peak is that of training steps, not of
    importing torch or compiling. A last, profiled step gives the peak of tensor memory (the profiler
    writes to stderr, which this process's parent does not show).
    """
    torch.set_num_threads(threads)
    steps = make_step(variant, batch)
    steps(2)
    before = rss_mb()
    reset = reset_peak_rss()
    steps(n)
    peak = peak_rss_mb()
    print(json.dumps({"variant": variant, "rss_before_mb": before, "peak_rss_mb": peak, "reset": reset,
                      "peak_tensor_mb": peak_tensor_mb(steps)}))


def peak_memory(variant: str, batch: int, n: int) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", variant, "--batch", str(batch),
           "--steps", str(n), "--threads", str(torch.get_num_threads())]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _randomised(net: UNet) -> UNet:
    """As ``default_unet``: zero-initialised layers get small random weights (else they hide errors)."""
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                p.normal_(0.0, 0.05)
    return net


def agreement(channels: int = 32) -> list[list]:
    """Max relative output difference ours vs plain_unet.from_ours, for both embeddings, +- attention."""
    rows = []
    for embedding in ("positional", "fourier"):
        for attn in ((), (4,)):
            torch.manual_seed(0)
            net = _randomised(UNet(8, 1, channels, (1, 2), 1, attn_resolutions=attn, embedding=embedding))
            rows.append([embedding, list(attn) or "mid only", plain_unet.output_error(net, batch=8)])
    return rows


def components(quick: bool) -> tuple[Table, dict]:
    """Adam's step and the EMA update alone, on the default U-Net's parameters: loop vs foreach."""
    k, repeats = (2, 1) if quick else (50, 7)
    torch.manual_seed(0)
    net = default_unet("vp").train()
    params = list(net.parameters())
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    adam_loop = torch.optim.Adam(params, lr=2e-4)
    adam_foreach = torch.optim.Adam(params, lr=2e-4, foreach=True)
    adam_fused = torch.optim.Adam(params, lr=2e-4, fused=True)
    ema_ours, ema_fe = EMA(net, 0.999), EMA(net, 0.999)
    fe_update = foreach_ema_update(ema_fe, net)
    ema_official = plain_unet.ExponentialMovingAverage(net.parameters(), 0.999)

    def times(fn):
        return lambda: [fn() for _ in range(k)]

    fns = {"Adam, default (for-loop on CPU)": times(adam_loop.step),
           "Adam, foreach=True": times(adam_foreach.step),
           "Adam, fused=True": times(adam_fused.step),
           "EMA, ours (lerp_ loop over state_dict)": times(lambda: ema_ours.update(net)),
           "EMA, torch._foreach_lerp_": times(fe_update),
           "EMA, official (sub_ loop over parameters)": times(lambda: ema_official.update(net.parameters()))}
    rounds = {}
    best = race(fns, repeats=repeats, warmup=1, rounds=rounds)
    base = {n: ("Adam, default (for-loop on CPU)" if n.startswith("Adam")
                else "EMA, ours (lerp_ loop over state_dict)") for n in fns}
    table = Table(f"Optimizer and EMA update alone on the default U-Net (CPU, {len(params)} tensors, "
                  f"{sum(p.numel() for p in params)} parameters; best of {repeats} blocks of {k} calls)",
                  ["update", "us per call", "time / default (paired median)"],
                  [[n, best[n] / k * 1e6, paired_ratio(rounds, n, base[n])] for n in fns],
                  notes=["default: what the training step uses now (Adam's defaults, EMA.update); below 1 "
                         "the alternative is faster"])
    return table, {n: paired_ratio(rounds, n, base[n]) for n in fns}


def run(quick: bool = False) -> Report:
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    variants = QUICK_VARIANTS if quick else GPU_VARIANTS if cuda else CPU_VARIANTS
    batch, block, repeats = (8, 1, 1) if quick else (128, 5, 7)
    report = Report("training")
    compile_s = {}
    fns = {}
    for v in variants:
        fns[v] = make_step(v, batch, device)
        t0 = time.perf_counter()
        fns[v](2)  # compile (when compiled) and warm up
        compile_s[v] = time.perf_counter() - t0
    runs = {v: (lambda f=fns[v]: f(block)) for v in variants}
    runs["A/A"] = runs["eager"]  # ours against itself: the noise floor of the ratios
    rounds = {}
    best = race(runs, repeats=repeats, warmup=0, rounds=rounds)
    noise = abs(paired_ratio(rounds, "eager", "A/A") - 1)
    mem_col = "peak CUDA MB (above allocated before)" if cuda else "peak tensor MB in a step"
    table = Table(f"Training step throughput (default U-Net, VP, batch {batch}, {device}, "
                  f"{torch.get_num_threads()} thread(s); best block of {block} steps of {repeats}, "
                  "alternating)",
                  ["variant", "iterations/s", "samples/s", "speed-up vs eager", "time / eager (paired)",
                   "first 2 steps s (compile)", mem_col, "peak RSS MB (rise in the steps)"],
                  notes=["a step = DSM loss + backward + clip_grad_norm + Adam + EMA update, "
                         "as stages/train/loop.py; plain: benchmarks/plain_unet.py, the same network and "
                         "initial weights in the official code's style, with its loss, Adam, EMA",
                         "memory: a fresh process per variant; peak tensor MB: the most tensor memory "
                         "allocated during one step above its start (profiler memory events: "
                         "activations, gradients, temporaries; the weights, Adam and EMA state, about "
                         "4 x the weights' size, are allocated before and alike for all); peak RSS: "
                         "high-water mark after 2 warm-up (compile) steps and 10 steps, in brackets the "
                         "rise above the RSS before them",
                         f"noise floor (A/A, ours eager against itself): {noise:.3f}"])
    mem = {}
    for v in variants:
        its = block / best[v]
        rss = "-"
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            fns[v](2)
            mem[v] = (torch.cuda.max_memory_allocated() - base) / 2**20
        elif not quick or v in ("eager", PLAIN):
            m = peak_memory(v, batch, 2 if quick else 10)
            rss = f"{m['peak_rss_mb']:.0f} (+{m['peak_rss_mb'] - m['rss_before_mb']:.0f})"
            if m["peak_tensor_mb"] is not None:
                mem[v] = m["peak_tensor_mb"]
        table.rows.append([v, its, its * batch, best["eager"] / best[v], paired_ratio(rounds, v, "eager"),
                           compile_s[v], mem.get(v, "-"), rss])
    if quick:
        table.notes.append("--quick: channels_last and torch.compile variants skipped")
    report.tables.append(table)

    errors = agreement(8 if quick else 32)
    err = max(r[-1] for r in errors)
    report.tables.append(Table("Same function: ours vs plain_unet.from_ours(ours), random 8x8 inputs",
                               ["embedding", "attention at", "max |ours - plain| / max |ours|"], errors,
                               notes=["8x8 U-Net, mult (1, 2), our weights copied (zero-initialised "
                                      "layers randomised); the middle block always has attention"]))

    ratio = paired_ratio(rounds, "eager", PLAIN)
    its_o, its_p = block / best["eager"], block / best[PLAIN]
    versus = Table("Ours (eager) vs plain", ["measure", "ours", "plain", "ours / plain"],
                   [["iterations/s (best block)", its_o, its_p, its_o / its_p],
                    ["time per step (paired median)", "-", "-", ratio]],
                   notes=["iterations/s: above 1 we are faster; time, memory: below 1 we are better"])
    report.checks.append(Check("training step: ours (eager) vs plain official-style network and loop",
                               ratio, 1.0, f"{its_o:.2f} vs {its_p:.2f} it/s; outputs agree to {err:.1e}",
                               agree=err < 1e-4, noise=noise))
    if "eager" in mem and PLAIN in mem:
        what = "peak CUDA MB" if cuda else "peak tensor MB in a step"
        versus.rows.append([what, mem["eager"], mem[PLAIN], mem["eager"] / mem[PLAIN]])
        report.checks.append(Check(f"training memory: ours vs plain, {what}", mem["eager"] / mem[PLAIN], 1.0,
                                   f"{mem['eager']:.1f} vs {mem[PLAIN]:.1f} MB", if_missed=WHY_MEMORY))
    report.tables.append(versus)
    comp, _ = components(quick)
    report.tables.append(comp)
    return report


if __name__ == "__main__":
    if "--child" in sys.argv:
        import argparse

        ap = argparse.ArgumentParser()
        ap.add_argument("--child")
        ap.add_argument("--batch", type=int)
        ap.add_argument("--steps", type=int)
        ap.add_argument("--threads", type=int, default=1)
        a = ap.parse_args()
        child(a.child, a.batch, a.steps, a.threads)
    else:
        cli_main(run, __doc__)
