"""The training loop of one process: continuous-time denoising score matching (Song et al.
2021, eq. 7) with Adam, a linear learning-rate warm-up, gradient-norm clipping and an EMA of the
weights (the EMA weights are what every later stage samples from).

Snapshots ``step_{k}.pt`` every ``train.snapshot_every`` steps (all kept; see
:mod:`~scoresde.stages.train.resume`) and a CSV of the training loss (step, loss, lr, seconds;
the mean loss over the last ``train.log_every`` steps). In distributed training every rank runs
this loop on its slice of the global batch and only rank 0 writes.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from functools import partial
from pathlib import Path

import torch
from tqdm import tqdm

from scoresde.checkpoint import save_checkpoint
from scoresde.data import Levels
from scoresde.stages.common import (
    Preempted,
    StageError,
    compiled_model,
    load_split,
    log,
    provenance,
    setup_torch,
    write_csv,
    write_json,
)
from scoresde.stages.config import free_iters, snapshot_steps
from scoresde.stages.train.distributed import (
    SINGLE,
    Ranks,
    agree_to_stop,
    dsm_noise,
    global_mean,
    rank_generators,
    rank_rng_states,
    rank_slice,
    wrap_ddp,
)
from scoresde.stages.train.precision import autocast, grad_scaler
from scoresde.stages.train.resume import (
    PREEMPT,
    RESUME_DIR,
    link_or_copy,
    restore_state,
    resume_point,
    snapshot_state,
    termination_signal,
)
from scoresde.utils import seed_stream

LOG_COLUMNS = ("step", "loss", "lr", "seconds")


class TrainingError(FloatingPointError):
    """Training diverged (non-finite loss)."""

def model_config(model: dict, sde_name: str, image_shape) -> dict:
    """build_model's config: the model group, `auto` embedding resolved, image size added.

    `auto` is the paper's pairing: Gaussian Fourier features of log sigma for VE (NCSN++),
    sinusoidal positional features of 999 t for VP / sub-VP (DDPM++).
    """
    channels, height, width = image_shape
    if height != width:
        raise StageError(f"images are {height}x{width}; the U-Net needs square images")
    embedding = model["embedding"]
    if embedding == "auto":
        embedding = "fourier" if sde_name == "ve" else "positional"
    return {**model, "embedding": embedding, "image_size": int(height),
            "in_channels": int(channels)}


def sde_config(sde: dict, name: str) -> dict:
    """make_sde's keyword arguments for `name` plus the name (stored in the checkpoint)."""
    return {"name": name, "N": sde["N"], **sde[name]}


RECIPE_KEYS = ("eps", "parameterization", "sigma_data", "noise_distribution", "p_mean", "p_std",
               "weighting", "min_snr_gamma")


def recipe(train: dict) -> dict:
    """`dsm_loss`'s keyword arguments from the train group: parameterisation, noise-level
    distribution and weighting (docs/training.md)."""
    return {k: train[k] for k in RECIPE_KEYS}


def parameterization(train: dict) -> dict:
    """What a checkpoint records to be read back as a score (`losses.get_score_fn`'s arguments)."""
    if train["parameterization"] == "paper":
        return {"name": "paper"}
    return {"name": train["parameterization"], "sigma_data": train["sigma_data"]}


def learning_rate(step: int, lr: float, warmup: int) -> float:
    """Linear warm-up to `lr` over `warmup` steps (as the paper's code), then constant."""
    return lr * min(1.0, step / warmup) if warmup > 0 else lr


def model_batch(k: torch.Tensor, meta: dict, batch_size: int, gen: torch.Generator,
                labels: torch.Tensor | None = None):
    """A random batch (with replacement) of level images mapped to model space by the run's
    `Levels` (dequantised with u drawn from `gen` after the indices). With ``labels`` (a
    class-conditional run): ``(x, y)``, each label replaced by "no label" (K) with probability
    ``label_dropout`` (classifier-free guidance's training, Ho & Salimans 2022), drawn last."""
    idx = torch.randint(len(k), (batch_size,), generator=gen)
    x = Levels.of(meta).to_model(k[idx], gen)
    if labels is None:
        return x
    cc = meta["class_conditional"]
    drop = torch.rand(batch_size, generator=gen) < cc["label_dropout"]
    return x, torch.where(drop, cc["num_classes"], labels[idx])


def class_conditional_params(job: dict) -> dict:
    """A train-conditional job's parameters as the train stage's: the train group with
    controllable.free's label dropout, seed and steps, one snapshot at the end."""
    free = job["controllable"]["free"]
    n_iters = free_iters(job)
    train = {**job["train"], "label_dropout": free["label_dropout"], "seed": free["seed"],
             "n_iters": n_iters, "snapshot_every": n_iters}
    return {**{k: v for k, v in job.items() if k != "controllable"}, "train": train}


def class_conditional(params: dict, split: dict) -> dict | None:
    """{num_classes, label_dropout} of a class-conditional run (``train.label_dropout`` set by
    ``train --class-conditional``), None for the paper's unconditional model."""
    if params["train"].get("label_dropout") is None:
        return None
    if split.get("labels") is None:
        raise StageError(f"{split['name']} has no labels; a class-conditional score network "
                         "needs a labelled dataset (set controllable.enabled: false)")
    return {"num_classes": int(split["labels"].max()) + 1,
            "label_dropout": float(params["train"]["label_dropout"])}


def build(params: dict, sde_name: str, split: dict, device: torch.device, quiet: bool = False):
    """(model, ema, optimizer, sde, checkpoint config) for a fresh run."""
    from scoresde.models import EMA, build_model, count_params, to_device
    from scoresde.sde import make_sde

    train = params["train"]
    config = {
        "dataset": split["name"], "levels": int(split["levels"]),
        "image_shape": list(split["x"].shape[1:]),
        "centered": bool(params["data"]["centered"][sde_name]),
        "dequantize": bool(train["dequantize"]),
        "sde": sde_config(params["sde"], sde_name),
        "model": model_config(params["model"], sde_name, split["x"].shape[1:]),
        "parameterization": parameterization(train),
        "train": params["train"],
    }  # fmt: skip
    conditional = class_conditional(params, split)
    if conditional:
        config["class_conditional"] = conditional
        config["model"]["num_classes"] = conditional["num_classes"]
    sde_kwargs = {k: v for k, v in config["sde"].items() if k != "name"}
    sde = make_sde(sde_name, **sde_kwargs)
    model = to_device(build_model(config["model"]), device)
    ema = EMA(model, train["ema_decay"][sde_name], warmup=train["ema_warmup"])
    # fused: one vectorised kernel for all parameters (CPU and CUDA; benchmarks/bench_training.py)
    optimizer = torch.optim.Adam(model.parameters(), lr=train["lr"],
                                 fused=torch.device(device).type in ("cpu", "cuda"))
    if not quiet:
        log(f"{sde_name}: {type(model).__name__} with {count_params(model):,} parameters, "
            f"data in {'[-1, 1]' if config['centered'] else '[0, 1]'}"
            f"{', dequantised' if config['dequantize'] else ''}, device {device}; "
            f"{train['parameterization']} parameterisation, {train['noise_distribution']} "
            f"noise levels, {train['weighting']} weighting")
    return model, ema, optimizer, sde, config


def fit(params: dict, data_path: str, sde_name: str, out_dir: str, log_csv: str,
        config_out: str, device: torch.device, threads: int, progress: bool,
        ranks: Ranks) -> list[Path]:
    """The training loop of one process (see :func:`run`)."""
    from scoresde.losses import dsm_loss
    train = params["train"]
    setup_torch(threads, seed=seed_stream(train["seed"], "train-init"))
    split = load_split(data_path)
    model, ema, optimizer, sde, config = build(params, sde_name, split, device,
                                               quiet=not ranks.main)
    gens = rank_generators(train["seed"], device, ranks.rank)
    scaler = grad_scaler(train["precision"], device)
    out = Path(out_dir)
    resume_dir = out / RESUME_DIR
    snaps = snapshot_steps(train["n_iters"], train["snapshot_every"])
    snap_set = set(snaps)  # looked up every step
    history = {"rows": [], "window": [], "elapsed": 0.0}
    found = resume_point(out, resume_dir, config, snaps, ranks)
    if found:
        history = restore_state(found[0], model, ema, optimizer, gens, ranks.rank, scaler)
        if ranks.main:
            log(f"resuming from step {found[0]['step']} ({found[1]})")
    first = int(found[0]["step"]) + 1 if found else 1
    written = [out / f"step_{k}.pt" for k in snaps if k < first]
    rows, window = history["rows"], history["window"]
    if ranks.main:
        for path in written:  # restore what Snakemake deleted when the job failed
            link_or_copy(resume_dir / path.name, path)
        if rows:  # a resumed run's log so far; a fresh run writes its log with its first snapshot
            write_csv(log_csv, LOG_COLUMNS, rows)
    net = wrap_ddp(model, device, ranks)
    forward = compiled_model(net, train.get("compile", "auto"), "train", device,
                             split["x"].shape[1:], train["batch_size"] // ranks.world)

    start = time.perf_counter() - float(history["elapsed"])
    model.train()
    bar = tqdm(range(first, train["n_iters"] + 1), desc=f"train {sde_name}", file=sys.stderr,
               mininterval=10.0, ascii=True, disable=not (progress and ranks.main),
               initial=first - 1, total=train["n_iters"])
    with termination_signal() as signalled:
        for step in bar:
            value = train_step(net, ema, optimizer, sde, split["x"], config, train, step,
                               gens, dsm_loss, device, ranks, scaler, forward,
                               split.get("labels"))
            if not math.isfinite(value):
                last = written[-1] if written else "none yet"
                raise TrainingError(f"training loss became {value} at step {step}; last good "
                                    f"snapshot: {last}. Lower train.lr or raise "
                                    "train.grad_clip")
            stop = agree_to_stop(signalled, ranks, device)
            window.append(value)
            if step % train["log_every"] == 0 or step in snap_set:
                rows.append({"step": step, "loss": sum(window) / len(window),
                             "lr": learning_rate(step, train["lr"], train["warmup"]),
                             "seconds": round(time.perf_counter() - start, 3)})
                bar.set_postfix(loss=f"{rows[-1]['loss']:.4f}", refresh=False)
                window = []
            name = f"step_{step}.pt" if step in snap_set else PREEMPT
            if step in snap_set or stop:
                history = {"rows": rows, "window": window,
                           "elapsed": time.perf_counter() - start}
                per_rank = rank_rng_states(ranks, device)
                if ranks.main:
                    state = snapshot_state(step, model, ema, optimizer, gens, history,
                                           per_rank, scaler)
                    save_checkpoint(resume_dir / name, state, {**config, "step": step})
                    write_csv(log_csv, LOG_COLUMNS, rows)
            if step in snap_set:
                written.append(out / name)
                if ranks.main:
                    link_or_copy(resume_dir / name, written[-1])
                    (resume_dir / PREEMPT).unlink(missing_ok=True)
                    log(f"step {step}: loss {rows[-1]['loss']:.4f}, snapshot {written[-1]}")
            if stop:
                raise Preempted(f"{stop} at step {step}: wrote {resume_dir / name}; run the "
                                "same command (snakemake: --rerun-incomplete) to resume")
    bar.close()
    if ranks.main:
        write_json(config_out, provenance("train", params, sde=sde_name, checkpoint=config,
                                          snapshots=[str(p) for p in written],
                                          seconds=round(time.perf_counter() - start, 1)))
        shutil.rmtree(resume_dir, ignore_errors=True)
    return written


def train_step(model, ema, optimizer, sde, k, config, train, step, gens, dsm_loss, device,
               ranks: Ranks = SINGLE, scaler=None, forward=None,
               labels: torch.Tensor | None = None):
    """One Adam step on a fresh batch (warm-up learning rate, clipping, EMA); the loss.
    A class-conditional run (``config["class_conditional"]``) feeds the batch's labels, some
    dropped to "no label", to the network.

    Distributed: every rank draws the global batch and its t, z (as `dsm_loss` draws them)
    and takes the loss on its slice; DDP averages the gradients, so the step is the one of
    the global batch. The returned loss is the global mean on every rank, and all ranks skip
    a step whose loss is not finite together. ``forward``: the network the loss evaluates
    (``model`` compiled, :func:`~scoresde.stages.common.compiled_model`); None: ``model``.
    """
    forward = model if forward is None else forward
    for group in optimizer.param_groups:
        group["lr"] = learning_rate(step, train["lr"], train["warmup"])
    y, net = None, forward
    if config.get("class_conditional"):
        x, y = model_batch(k, config, train["batch_size"], gens["data"], labels)
        y = y.to(device)
        net = partial(forward, labels=y)
    else:
        x = model_batch(k, config, train["batch_size"], gens["data"])
    x = x.to(device)
    kwargs = recipe(train)
    with autocast(train["precision"], device):
        if ranks.world == 1:
            loss = dsm_loss(net, sde, x, generator=gens["noise"], **kwargs)
        else:
            t, z = dsm_noise(sde, x, gens["noise"], **kwargs)
            part = rank_slice(len(x), ranks)
            net = net if y is None else partial(forward, labels=y[part])
            loss = dsm_loss(net, sde, x[part], t=t[part], z=z[part], **kwargs)
    value = global_mean(loss, ranks)
    if math.isfinite(value):
        optimizer.zero_grad(set_to_none=True)
        (scaler.scale(loss) if scaler else loss).backward()
        if scaler:
            scaler.unscale_(optimizer)
        if train["grad_clip"] > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), train["grad_clip"])
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        ema.update(getattr(model, "module", model))
    return value
