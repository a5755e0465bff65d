"""Sampler overhead: wall time / (NFE x one network forward), measured side by side in one run.

A ratio of 1.0 means the sampler costs nothing beyond the score network; the target is <= 1.15
for PC and fixed-step ODE sampling at batch 256 on a small conv net (issue 2).

    python benchmarks/sampler_overhead.py [--batch 256] [--steps 50] [--threads 2]
"""

from __future__ import annotations

import argparse
import platform
import time
from functools import partial

import torch

from scoresde import VESDE, VPSDE, get_score_fn, ode_sample, pc_sample
from scoresde.models import UNet

CASES = [
    ("pc: reverse_diffusion + langevin", "pc", dict(predictor="reverse_diffusion", corrector="langevin")),
    ("p: reverse_diffusion", "pc", dict(predictor="reverse_diffusion", corrector="none")),
    ("p: euler_maruyama", "pc", dict(predictor="euler_maruyama", corrector="none")),
    ("p: ancestral", "pc", dict(predictor="ancestral", corrector="none")),
    ("c: langevin", "pc", dict(predictor="none", corrector="langevin")),
    ("pc: ancestral + ald", "pc", dict(predictor="ancestral", corrector="ald")),
    ("ode: euler", "ode", dict(method="euler")),
    ("ode: heun", "ode", dict(method="heun")),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = UNet(image_size=8, in_channels=1, channels=16, channel_mult=(1, 2), num_res_blocks=1).eval()
    with torch.no_grad():  # the zero-initialised output layers would give a zero score
        for p in net.parameters():
            if not p.any():
                p.normal_(0.0, 0.05)
    shape = (args.batch, 1, 8, 8)
    print(f"# sampler overhead | torch {torch.__version__} | {platform.processor() or platform.machine()} "
          f"| threads {args.threads} | batch {args.batch} | steps {args.steps}")
    print(f"{'sde':5} {'sampler':34} {'nfe':>5} {'wall s':>8} {'forward ms':>10} {'ratio':>6}")
    with torch.inference_mode():
        for sde in (VESDE(), VPSDE()):
            score_fn = get_score_fn(sde, net)
            for label, kind, kw in CASES:
                sampler = pc_sample if kind == "pc" else ode_sample
                run = partial(sampler, score_fn, sde, shape, steps=args.steps, generator=None, **kw)
                wall, fwd, nfe, ratio = measure(run, net, sde, shape, args.repeats)
                print(f"{sde.name:5} {label:34} {nfe:5d} {wall:8.3f} {fwd * 1e3:10.2f} {ratio:6.3f}")


def measure(run, net, sde, shape, repeats):
    """Sampler wall time, per-forward time and their ratio, the two timed back to back each round.

    The order alternates between rounds and the ratio is the median of the rounds' own ratios, so
    a load change on the machine cancels within a round instead of landing on one of the two.
    """
    import statistics

    x, t = torch.randn(shape), torch.full((shape[0],), 0.5)
    _, nfe = run()  # warm-up, and the NFE to match

    def sampler():
        t0 = time.perf_counter()
        run()
        return time.perf_counter() - t0

    def forwards():
        t0 = time.perf_counter()
        for _ in range(nfe):
            net(x, sde.noise_condition(t))
        return (time.perf_counter() - t0) / nfe

    walls, fwds = [], []
    for i in range(repeats):
        if i % 2:
            fwds.append(forwards())
            walls.append(sampler())
        else:
            walls.append(sampler())
            fwds.append(forwards())
    ratio = statistics.median(w / (nfe * f) for w, f in zip(walls, fwds, strict=True))
    return min(walls), min(fwds), nfe, ratio


if __name__ == "__main__":
    main()
