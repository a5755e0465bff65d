"""Bias of the inpainting methods against the exact conditional p(x2 | x1 = y) (2-D, exact score).

For each SDE and three observations (a correlated Gaussian, rho = 0.9, at x1 = 1; a two-mode mixture
at x1 = 0, where p(x2 | x1) is bimodal; the same mixture at x1 = 1.5, deep in one mode), every
method imputes x2 with the exact score in float64 (no corrector, reverse-diffusion predictor,
``--steps`` uniform steps, Tweedie at the end). Printed per case: the mean of x2 against the exact
conditional mean, and the 1-D Wasserstein-1 distance to exact samples in units of the two-sample
noise floor (the W1 between two independent exact samples of the same size; ~1 = as good as exact).

    python benchmarks/controllable_bias.py [--n 2000] [--steps 200] [--particles 16]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from scoresde.controllable import inpaint
from scoresde.sde import make_sde

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from exact_conditional import (  # noqa: E402
    bimodal_mixture,
    conditional_x2,
    correlated_gaussian,
    fast_score_fn,
    noise_floor,
    sample_conditional_x2,
    wasserstein1,
)

SDES = {"ve": {"sigma_min": 0.01, "sigma_max": 10.0}, "vp": {}, "subvp": {}}
CASES = {"gaussian rho=0.9, x1=1": (correlated_gaussian, 1.0),
         "bimodal, x1=0": (bimodal_mixture, 0.0), "one mode, x1=1.5": (bimodal_mixture, 1.5)}


def methods(particles: int) -> dict:
    return {"replace": {}, "repaint (jump 5, resample 3)": {"method": "repaint", "jump": 5,
                                                              "resample": 3},
            f"smc ({particles} particles)": {"method": "smc", "particles": particles}}


def table(n: int, steps: int, particles: int, sdes, seed: int = 0) -> list[dict]:
    rows = []
    for sde_name in sdes:
        sde = make_sde(sde_name, **SDES[sde_name])
        for case, (make, y1) in CASES.items():
            mix = make()
            w, mu, _ = conditional_x2(mix, y1)
            exact_mean = float((w * mu).sum())
            exact = sample_conditional_x2(mix, y1, n, torch.Generator().manual_seed(seed + 1))
            floor = noise_floor(mix, y1, n)
            y = torch.zeros(n, 2, dtype=torch.float64)
            y[:, 0] = y1
            mask = torch.zeros_like(y)
            mask[:, 0] = 1.0
            for label, opts in methods(particles).items():
                opts = dict(opts)
                method = opts.pop("method", "replace")
                x, nfe = inpaint(fast_score_fn(mix, sde), sde, y, mask, steps, method=method,
                                 corrector="none", generator=torch.Generator().manual_seed(seed),
                                 **opts)
                rows.append({"sde": sde_name, "case": case, "method": label, "nfe": nfe,
                             "mean": float(x[:, 1].mean()), "exact_mean": exact_mean,
                             "w1_over_floor": wasserstein1(x[:, 1], exact) / floor})
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| SDE | observation | method | NFE per sample | mean of x2 (exact) | W1 / noise floor |",
             "|---|---|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['sde']} | {r['case']} | {r['method']} | {r['nfe']} | "
                     f"{r['mean']:.3f} ({r['exact_mean']:.3f}) | {r['w1_over_floor']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--particles", type=int, default=16)
    p.add_argument("--sdes", nargs="+", default=list(SDES))
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"n = {args.n} samples per case, {args.steps} steps, float64, exact score\n")
    print(markdown(table(args.n, args.steps, args.particles, args.sdes)))


if __name__ == "__main__":
    main()
