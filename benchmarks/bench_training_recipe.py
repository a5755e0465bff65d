"""Training recipes at equal wall time: the paper's against each change and their combinations.

Every recipe trains the same network from the same initialisation on the same batches for the same
wall-clock budget (``--budget`` seconds of training steps, each step the train stage's
``train_step``: Adam with warm-up, clipping, EMA), then draws ``--samples`` images with one fixed
sampler (``--sampler`` / ``--steps``, the same per-sample seeds) from the EMA weights read back through
the parameterisation, and is scored by the fid stage's ``Scorer`` (FID, precision, recall with
their intervals, in the pipeline's own feature classifier) and by the speckled share (total
variation > 0.25; the real test images' share is printed beside it). Recipes (train.* keys):

- ``paper``: Song et al.'s parameterisation, t ~ U(eps, 1), lambda = s(t)^2;
- ``edm-precond``, ``lognormal``, ``edm-weighting``, ``min-snr``: one change each;
- ``edm``: EDM's parameterisation, log-normal noise levels and EDM's weighting;
- ``edm+min-snr``: EDM's parameterisation, log-normal noise levels and Min-SNR-gamma.

The data, network, SDE and metrics settings come from the pipeline's parameters (``params.yaml``,
``--configfile``, ``--set``); its files go to ``--work`` (prepare-data, the feature classifier).

    python benchmarks/bench_training_recipe.py --budget 300 --samples 2000 \\
        --configfile config/fashion_mnist_cpu.yaml --sde vp --threads 2
    python benchmarks/bench_training_recipe.py --budget 3 --samples 16 --set eval.features.epochs=1
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from benchlib import Table

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {
    "paper": {},
    "edm-precond": {"parameterization": "edm"},
    "lognormal": {"noise_distribution": "lognormal"},
    "edm-weighting": {"weighting": "edm"},
    "min-snr": {"weighting": "min-snr"},
    "edm": {"parameterization": "edm", "noise_distribution": "lognormal", "weighting": "edm"},
    "edm+min-snr": {"parameterization": "edm", "noise_distribution": "lognormal", "weighting": "min-snr"},
}
PAPER = {"parameterization": "paper", "noise_distribution": "uniform", "weighting": "paper"}


def prepare(params: dict, work: Path, threads: int) -> dict:
    """prepare-data and the feature classifier into ``work`` (reused when already there)."""
    from scoresde.stages import fid, prepare_data

    paths = {k: work / f"{k}.pt" for k in ("train", "test", "reference", "features")}
    if not paths["reference"].exists():
        prepare_data.run(params, str(paths["train"]), str(paths["test"]), str(paths["reference"]))
    if not paths["features"].exists():
        fid.train_features(params, str(paths["train"]), str(paths["test"]), str(paths["features"]),
                           "cpu", threads)
    return paths


def train_for(params: dict, sde_name: str, split: dict, budget: float, device) -> tuple:
    """(model with EMA weights, sde, checkpoint config, steps, mean loss of the last 50 steps):
    train steps until ``budget`` seconds of them have run."""
    from scoresde.losses import dsm_loss
    from scoresde.stages.train.distributed import rank_generators
    from scoresde.stages.train.loop import build, train_step
    from scoresde.utils import seed_stream

    train = params["train"]
    torch.manual_seed(seed_stream(train["seed"], "train-init"))
    model, ema, optimizer, sde, config = build(params, sde_name, split, device, quiet=True)
    gens = rank_generators(train["seed"], device, 0)
    model.train()
    spent, step, losses = 0.0, 0, []
    while spent < budget:
        step += 1
        start = time.perf_counter()
        losses.append(train_step(model, ema, optimizer, sde, split["x"], config, train, step, gens,
                                 dsm_loss, device))
        spent += time.perf_counter() - start
    ema.copy_to(model)
    model.eval().requires_grad_(False)
    tail = losses[-50:]
    return model, sde, config, step, sum(tail) / len(tail)


def run(params: dict, sde_name: str, recipes, budget: float, n_samples: int, sampler: str,
        steps: int | None, denoise: bool, work: Path, threads: int) -> Table:
    from scoresde.metrics.corruptions import SPECKLE_TV, speckled_share
    from scoresde.stages.cases import sampler_options
    from scoresde.stages.common import draw_samples, load_reference, load_split, setup_torch, split_images
    from scoresde.stages.fid import Scorer

    sample = params["sample"]
    setup_torch(threads)
    device = torch.device("cpu")
    paths = prepare(params, work, threads)
    split = load_split(paths["train"])
    test = split_images(load_split(paths["test"]))
    scorer = Scorer(params, load_reference(paths["reference"]), str(paths["features"]), False,
                    split_images(split), test)
    real_tv = speckled_share(test)
    rows, level = [], params["eval"]["fid"]["bootstrap"]["confidence"]
    for name in recipes:
        recipe = {**params, "train": {**params["train"], **PAPER, **RECIPES[name]}}
        model, sde, config, n_steps, loss = train_for(recipe, sde_name, split, budget, device)
        images = draw_samples(model, sde, config, sampler, steps, [denoise], n_samples, sample["batch_size"],
                              sample["seed"], device, snr=sample["snr"][sde_name],
                              corrector_steps=sample["corrector_steps"], eps=sample["eps"],
                              rtol=sample["rtol"], atol=sample["atol"],
                              sigma_min=sample["sigma_min"][sde_name],
                              options=sampler_options(sample, sde_name, sampler))[0][denoise]
        m = scorer.metrics(images)
        speckled = speckled_share(images)
        rows.append([name, n_steps, loss, f"{m['fid']:.3g} [{m.get('fid_ci_low', float('nan')):.3g}, "
                     f"{m.get('fid_ci_high', float('nan')):.3g}]", m["precision"], m["recall"],
                     f"{speckled:.1%}"])
        print(f"{name}: {n_steps} steps, FID {m['fid']:.3g}", file=sys.stderr, flush=True)
    return Table(
        f"Training recipes at equal wall time: {sde_name}, {budget:g} s of training each, "
        f"{n_samples} samples by {sampler}" + (f" ({steps} steps)" if steps else "")
        + (" + Tweedie" if denoise else ""),
        ["recipe", "steps", "loss (last 50)", "FID [interval]", "precision", "recall", "speckled"], rows,
        notes=[f"features: {scorer.space.label}; intervals: {level:.0%} bootstrap; the loss is on "
               "each recipe's own weighting (not comparable across rows)",
               f"speckled: total variation > {SPECKLE_TV} (real test images: {real_tv:.1%})"])


def main(argv=None) -> int:
    from scoresde.stages import config as cfg

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=60.0, help="seconds of training per recipe")
    ap.add_argument("--samples", type=int, default=400)
    ap.add_argument("--sde", default="vp", choices=("ve", "vp", "subvp"))
    ap.add_argument("--sampler", default="ode-dpm-solver-2")
    ap.add_argument("--steps", type=int, default=10, help="sampler steps (ignored by ode-rk45)")
    ap.add_argument("--denoise", default="tweedie", choices=("tweedie", "none"))
    ap.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated names")
    ap.add_argument("--configfile", action="append", default=[], help="merged over params.yaml")
    ap.add_argument("--set", action="append", default=[], dest="sets", help="KEY=VALUE, as the CLI")
    ap.add_argument("--work", type=Path, default=None, help="data and feature files (default: temporary)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    recipes = [r for r in args.recipes.split(",") if r]
    unknown = [r for r in recipes if r not in RECIPES]
    if unknown or args.budget <= 0 or args.samples < 2:
        ap.error(f"recipes from {', '.join(RECIPES)}, budget > 0, samples >= 2 (got {args.recipes}, "
                 f"{args.budget}, {args.samples})")
    merged = cfg.load_file(ROOT / "params.yaml")
    for path in args.configfile:
        merged = cfg.merge(merged, cfg.load_file(path))
    params = cfg.resolve(overrides=merged, sets=args.sets)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        steps = None if args.sampler == "ode-rk45" else args.steps
        table = run(params, args.sde, recipes, args.budget, args.samples, args.sampler, steps,
                    args.denoise == "tweedie", work, args.threads)
    print(table.markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
