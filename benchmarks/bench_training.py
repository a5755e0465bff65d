"""Training throughput of our U-Net step: eager NCHW, channels_last, torch.compile (CPU, inductor).

One step is what ``stages/train.py`` does: DSM loss (eq. 7), backward, gradient clipping, Adam, EMA.
The variants are timed in alternation (blocks of steps, best block kept); peak memory is the
resident-set high-water mark (``resource.getrusage``) of a fresh child process per variant, reported
above the child's resident size before its first step. On a GPU machine the same script adds bf16
autocast (mixed precision) and reports ``torch.cuda.max_memory_allocated``.

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

import torch
from benchlib import Report, Table, cli_main, default_unet, race

from scoresde import VPSDE, dsm_loss
from scoresde.models import EMA

CPU_VARIANTS = ("eager", "channels_last", "compile", "compile + channels_last")
GPU_VARIANTS = ("eager", "channels_last", "bf16 autocast", "bf16 autocast + channels_last")


def make_step(variant: str, batch: int, device: str = "cpu", seed: int = 0):
    """A closure doing ``k`` training steps of the default U-Net (VP, 8x8 digits-sized) and its model."""
    torch.manual_seed(seed)
    net = default_unet("vp").train().to(device)
    last = "channels_last" in variant
    if last:
        net = net.to(memory_format=torch.channels_last)
    model = torch.compile(net) if "compile" in variant else net
    amp = "autocast" in variant
    sde, ema = VPSDE(), EMA(net, 0.999)
    opt = torch.optim.Adam(net.parameters(), lr=2e-4)
    gen = torch.Generator(device=device).manual_seed(seed)
    x = torch.rand(batch, 1, 8, 8, generator=gen, device=device) * 2 - 1
    if last:
        x = x.contiguous(memory_format=torch.channels_last)

    def steps(k: int = 1):
        for _ in range(k):
            with torch.autocast(device, dtype=torch.bfloat16, enabled=amp):
                loss = dsm_loss(model, sde, x, generator=gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            ema.update(net)
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


def child(variant: str, batch: int, n: int, threads: int) -> None:
    """Run in a fresh process: 2 warm-up (compile) steps, then ``n`` steps; print peak memory as JSON.

    The high-water mark is reset after the warm-up, so the peak is that of training steps, not of
    importing torch or compiling.
    """
    torch.set_num_threads(threads)
    steps = make_step(variant, batch)
    steps(2)
    before = rss_mb()
    reset = reset_peak_rss()
    steps(n)
    print(json.dumps({"variant": variant, "rss_before_mb": before, "peak_rss_mb": peak_rss_mb(),
                      "reset": reset}))


def peak_memory(variant: str, batch: int, n: int) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", variant, "--batch", str(batch),
           "--steps", str(n), "--threads", str(torch.get_num_threads())]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def run(quick: bool = False) -> Report:
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    variants = GPU_VARIANTS if cuda else CPU_VARIANTS
    if quick:
        variants = variants[:2]
    batch, block, repeats = (8, 1, 1) if quick else (128, 5, 5)
    report = Report("training")
    compile_s = {}
    fns = {}
    for v in variants:
        fns[v] = make_step(v, batch, device)
        t0 = time.perf_counter()
        fns[v](2)  # compile (when compiled) and warm up
        compile_s[v] = time.perf_counter() - t0
    best = race({v: (lambda f=fns[v]: f(block)) for v in variants}, repeats=repeats, warmup=0)
    table = Table(f"Training step throughput (default U-Net, VP, batch {batch}, {device}, "
                  f"{torch.get_num_threads()} thread(s); best block of {block} steps of {repeats}, "
                  "alternating)",
                  ["variant", "iterations/s", "samples/s", "speed-up vs eager", "first 2 steps s (compile)",
                   "peak RSS MB (above pre-step)" if not cuda else "peak CUDA MB"],
                  notes=["a step = DSM loss + backward + clip_grad_norm + Adam + EMA update, "
                         "as stages/train.py",
                         "peak RSS: a fresh process per variant, high-water mark reset after 2 warm-up "
                         "(compile) steps, then 10 steps; in brackets the rise above the RSS before them"])
    for v in variants:
        its = block / best[v]
        if cuda:
            mem = torch.cuda.max_memory_allocated() / 2**20
        elif quick and v != variants[0]:
            mem = "-"
        else:
            m = peak_memory(v, batch, 2 if quick else 10)
            mem = f"{m['peak_rss_mb']:.0f} (+{m['peak_rss_mb'] - m['rss_before_mb']:.0f})"
        table.rows.append([v, its, its * batch, best["eager"] / best[v], compile_s[v], mem])
    if quick:
        table.notes.append("--quick: torch.compile variants skipped")
    report.tables.append(table)
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
