"""train: continuous-time denoising score matching (Song et al. 2021, eq. 7) for one SDE.

Adam with a linear learning-rate warm-up and gradient-norm clipping, an EMA of the weights
(the EMA weights are what every later stage samples from), snapshots ``step_{k}.pt`` every
``train.snapshot_every`` steps (all kept) and a CSV of the training loss (step, loss, lr,
seconds; the mean loss over the last ``train.log_every`` steps).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from tqdm import tqdm

from scoresde.checkpoint import CheckpointError, atomic_write, load_checkpoint, save_checkpoint
from scoresde.data import levels_to_unit, to_model_space
from scoresde.stages.common import (
    Preempted,
    StageError,
    load_split,
    log,
    provenance,
    setup_torch,
    write_csv,
    write_json,
)
from scoresde.stages.config import snapshot_steps

LOG_COLUMNS = ("step", "loss", "lr", "seconds")
RESUME_DIR = "resume"  # beside the snapshots; not a Snakemake output
PREEMPT = "preempt.pt"  # the state written on SIGTERM between two snapshots


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


def learning_rate(step: int, lr: float, warmup: int) -> float:
    """Linear warm-up to `lr` over `warmup` steps (as the paper's code), then constant."""
    return lr * min(1.0, step / warmup) if warmup > 0 else lr


def model_batch(k: torch.Tensor, meta: dict, batch_size: int, gen: torch.Generator):
    """A random batch (with replacement) of level images mapped to model space.

    Levels go to [0, 1] as k / (L - 1), or, with dequantisation, as (k + u) / L with
    u ~ U[0, 1) (the map the likelihood stage uses), then to [-1, 1] when centred.
    """
    from scoresde.likelihood import uniform_dequantize

    idx = torch.randint(len(k), (batch_size,), generator=gen)
    levels = meta["levels"]
    dequantize = uniform_dequantize if meta["dequantize"] else None
    x01 = dequantize(k[idx], levels, gen) if dequantize else levels_to_unit(k[idx], levels)
    return to_model_space(x01, meta["centered"])


def build(params: dict, sde_name: str, split: dict, device: torch.device):
    """(model, ema, optimizer, sde, checkpoint config) for a fresh run."""
    from scoresde.models import EMA, build_model, count_params
    from scoresde.sde import make_sde

    train = params["train"]
    config = {
        "dataset": split["name"], "levels": int(split["levels"]),
        "image_shape": list(split["x"].shape[1:]),
        "centered": bool(params["data"]["centered"][sde_name]),
        "dequantize": bool(train["dequantize"]),
        "sde": sde_config(params["sde"], sde_name),
        "model": model_config(params["model"], sde_name, split["x"].shape[1:]),
        "train": params["train"],
    }  # fmt: skip
    sde_kwargs = {k: v for k, v in config["sde"].items() if k != "name"}
    sde = make_sde(sde_name, **sde_kwargs)
    model = build_model(config["model"]).to(device)
    ema = EMA(model, train["ema_decay"][sde_name], warmup=train["ema_warmup"])
    optimizer = torch.optim.Adam(model.parameters(), lr=train["lr"])
    log(f"{sde_name}: {type(model).__name__} with {count_params(model):,} parameters, "
        f"data in {'[-1, 1]' if config['centered'] else '[0, 1]'}"
        f"{', dequantised' if config['dequantize'] else ''}, device {device}")
    return model, ema, optimizer, sde, config


def snapshot_state(step: int, model, ema, optimizer, gens: dict, history: dict) -> dict:
    """Everything a resumed run needs to continue bit-identically from `step`."""
    rng = {"torch": torch.get_rng_state(), **{k: g.get_state() for k, g in gens.items()}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return {"model": model.state_dict(), "ema": ema.state_dict(),
            "optimizer": optimizer.state_dict(), "step": step, "rng": rng,
            "history": history}  # fmt: skip


def restore_state(state: dict, model, ema, optimizer, gens: dict) -> dict:
    """Load a snapshot_state into the objects of a fresh run; returns its history."""
    model.load_state_dict(state["model"])
    ema.load_state_dict(state["ema"])
    opt = dict(state["optimizer"])  # checkpoints store dict keys as strings
    opt["state"] = {int(k): v for k, v in opt["state"].items()}
    optimizer.load_state_dict(opt)
    torch.set_rng_state(state["rng"]["torch"])
    for name, gen in gens.items():
        gen.set_state(state["rng"][name])
    if "cuda" in state["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return state["history"]


def link_or_copy(src: Path, dst: Path) -> None:
    """Atomically make `dst` a hard link to `src` (a copy where links are not supported)."""
    with atomic_write(dst) as tmp:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


def remove_temporaries(*folders: Path) -> None:
    """Delete what a killed atomic write of a snapshot left behind (`.tmp-*` files)."""
    for folder in folders:
        for tmp in folder.glob(".tmp-*.pt"):
            tmp.unlink(missing_ok=True)


def _same_run(saved: dict, config: dict) -> bool:
    saved = {k: v for k, v in saved.items() if k != "step"}
    return saved == json.loads(json.dumps(config))


def find_resume(resume_dir: Path, config: dict, snaps: list[int]):
    """(state, path) of the newest complete snapshot in `resume_dir` written by a run of the
    same configuration, or None (unreadable files are skipped with a log line; a snapshot at
    step N is usable only if every snapshot of steps <= N is there too)."""
    candidates = [(int(p.stem.split("_")[1]), p) for p in resume_dir.glob("step_*.pt")]
    preempt = resume_dir / PREEMPT
    if preempt.is_file():
        candidates.append((-1, preempt))  # its step is read from the file
    for _, path in sorted(candidates, key=lambda c: (c[0] < 0, c[0]), reverse=True):
        try:
            state, saved = load_checkpoint(path)
        except CheckpointError as err:
            log(f"ignoring resume snapshot: {err}")
            continue
        if not _same_run(saved, config):
            log(f"ignoring resume snapshots in {resume_dir}: written by a run with other "
                "parameters")
            return None
        step = int(state["step"])
        if all((resume_dir / f"step_{k}.pt").is_file() for k in snaps if k <= step):
            return state, path
    return None


def run(params: dict, data_path: str, sde_name: str, out_dir: str, log_csv: str,
        config_out: str, device_name: str = "auto", threads: int = 1,
        progress: bool = True) -> list[Path]:
    """Train one SDE; returns the snapshot paths.

    Resumable: every snapshot is also kept (hard-linked) under ``out_dir/resume/``, which is
    not a Snakemake output and so survives the clean-up of a failed or killed job; a rerun
    with the same parameters continues from the newest one, bit-identically on CPU. SIGTERM
    (what SLURM sends before a time limit) writes ``resume/preempt.pt`` at the end of the
    current step and raises `Preempted`. The resume folder is removed once training is done.
    """
    from scoresde.losses import dsm_loss
    from scoresde.utils import pick_device, seed_stream, seeded_generator

    train = params["train"]
    setup_torch(threads, seed=seed_stream(train["seed"], "train-init"))
    device = pick_device(device_name)
    split = load_split(data_path)
    model, ema, optimizer, sde, config = build(params, sde_name, split, device)
    gens = {"data": seeded_generator(train["seed"], "train-batches"),
            "noise": seeded_generator(train["seed"], "train-noise", device=device)}
    out = Path(out_dir)
    resume_dir = out / RESUME_DIR
    snaps = snapshot_steps(train["n_iters"], train["snapshot_every"])
    snap_set = set(snaps)  # looked up every step
    remove_temporaries(out, resume_dir)
    history = {"rows": [], "window": [], "elapsed": 0.0}
    found = find_resume(resume_dir, config, snaps) if resume_dir.is_dir() else None
    if found:
        history = restore_state(found[0], model, ema, optimizer, gens)
        log(f"resuming from step {found[0]['step']} ({found[1]})")
    elif resume_dir.exists():
        shutil.rmtree(resume_dir)
    first = int(found[0]["step"]) + 1 if found else 1
    written = [out / f"step_{k}.pt" for k in snaps if k < first]
    for path in written:  # restore what Snakemake deleted when the job failed
        link_or_copy(resume_dir / path.name, path)
    rows, window = history["rows"], history["window"]
    write_csv(log_csv, LOG_COLUMNS, rows)

    start = time.perf_counter() - float(history["elapsed"])
    model.train()
    bar = tqdm(range(first, train["n_iters"] + 1), desc=f"train {sde_name}", file=sys.stderr,
               mininterval=10.0, ascii=True, disable=not progress, initial=first - 1,
               total=train["n_iters"])
    with termination_signal() as stop:
        for step in bar:
            value = train_step(model, ema, optimizer, sde, split["x"], config, train, step,
                               gens, dsm_loss, device)
            if not math.isfinite(value):
                last = written[-1] if written else "none yet"
                raise TrainingError(f"training loss became {value} at step {step}; last good "
                                    f"snapshot: {last}. Lower train.lr or raise "
                                    "train.grad_clip")
            window.append(value)
            if step % train["log_every"] == 0 or step in snap_set:
                rows.append({"step": step, "loss": sum(window) / len(window),
                             "lr": learning_rate(step, train["lr"], train["warmup"]),
                             "seconds": round(time.perf_counter() - start, 3)})
                bar.set_postfix(loss=f"{rows[-1]['loss']:.4f}", refresh=False)
                window = []
            if step in snap_set or stop:
                history = {"rows": rows, "window": window,
                           "elapsed": time.perf_counter() - start}
                state = snapshot_state(step, model, ema, optimizer, gens, history)
                name = f"step_{step}.pt" if step in snap_set else PREEMPT
                save_checkpoint(resume_dir / name, state, {**config, "step": step})
                write_csv(log_csv, LOG_COLUMNS, rows)
            if step in snap_set:
                written.append(out / name)
                link_or_copy(resume_dir / name, written[-1])
                (resume_dir / PREEMPT).unlink(missing_ok=True)
                log(f"step {step}: loss {rows[-1]['loss']:.4f}, snapshot {written[-1]}")
            if stop:
                raise Preempted(f"{stop[0]} at step {step}: wrote {resume_dir / name}; run the "
                                "same command (snakemake: --rerun-incomplete) to resume")
    bar.close()
    write_json(config_out, provenance("train", params, sde=sde_name, checkpoint=config,
                                      snapshots=[str(p) for p in written],
                                      seconds=round(time.perf_counter() - start, 1)))
    shutil.rmtree(resume_dir, ignore_errors=True)
    return written


def train_step(model, ema, optimizer, sde, k, config, train, step, gens, dsm_loss, device):
    """One Adam step on a fresh batch (warm-up learning rate, clipping, EMA); the loss."""
    for group in optimizer.param_groups:
        group["lr"] = learning_rate(step, train["lr"], train["warmup"])
    x = model_batch(k, config, train["batch_size"], gens["data"]).to(device)
    loss = dsm_loss(model, sde, x, generator=gens["noise"], eps=train["eps"],
                    likelihood_weighting=train["likelihood_weighting"])
    value = loss.item()
    if math.isfinite(value):
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if train["grad_clip"] > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), train["grad_clip"])
        optimizer.step()
        ema.update(model)
    return value


@contextmanager
def termination_signal():
    """A list that receives the signal's name when SIGTERM arrives (main thread only)."""
    received: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append("SIGTERM"))
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)
