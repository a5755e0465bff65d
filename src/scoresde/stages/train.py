"""train: continuous-time denoising score matching (Song et al. 2021, eq. 7) for one SDE.

Adam with a linear learning-rate warm-up and gradient-norm clipping, an EMA of the weights
(the EMA weights are what every later stage samples from), snapshots ``step_{k}.pt`` every
``train.snapshot_every`` steps (all kept) and a CSV of the training loss (step, loss, lr,
seconds; the mean loss over the last ``train.log_every`` steps).
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from scoresde.checkpoint import save_checkpoint
from scoresde.data import levels_to_unit, to_model_space
from scoresde.stages.common import (
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


def snapshot(path: Path, step: int, model, ema, optimizer, gens: dict, config: dict) -> None:
    state = {
        "model": model.state_dict(), "ema": ema.state_dict(),
        "optimizer": optimizer.state_dict(), "step": step,
        "rng": {"torch": torch.get_rng_state(),
                **{k: g.get_state() for k, g in gens.items()}},
    }  # fmt: skip
    save_checkpoint(path, state, {**config, "step": step})


def run(params: dict, data_path: str, sde_name: str, out_dir: str, log_csv: str,
        config_out: str, device_name: str = "auto", threads: int = 1,
        progress: bool = True) -> list[Path]:
    """Train one SDE; returns the snapshot paths."""
    from scoresde.losses import dsm_loss
    from scoresde.utils import pick_device

    train = params["train"]
    setup_torch(threads, seed=train["seed"])
    device = pick_device(device_name)
    split = load_split(data_path)
    model, ema, optimizer, sde, config = build(params, sde_name, split, device)
    gens = {"data": torch.Generator().manual_seed(train["seed"]),
            "noise": torch.Generator(device=device).manual_seed(train["seed"] + 1)}
    k = split["x"]
    out = Path(out_dir)
    snaps, written, rows, window = set(snapshot_steps(train["n_iters"],
                                                      train["snapshot_every"])), [], [], []
    start = time.perf_counter()
    model.train()
    bar = tqdm(range(1, train["n_iters"] + 1), desc=f"train {sde_name}", file=sys.stderr,
               mininterval=10.0, ascii=True, disable=not progress)
    for step in bar:
        lr = learning_rate(step, train["lr"], train["warmup"])
        for group in optimizer.param_groups:
            group["lr"] = lr
        x = model_batch(k, config, train["batch_size"], gens["data"]).to(device)
        loss = dsm_loss(model, sde, x, generator=gens["noise"], eps=train["eps"],
                        likelihood_weighting=train["likelihood_weighting"])
        value = loss.item()
        if not math.isfinite(value):
            last = written[-1] if written else "none yet"
            raise TrainingError(f"training loss became {value} at step {step}; last good "
                                f"snapshot: {last}. Lower train.lr or raise train.grad_clip")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if train["grad_clip"] > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), train["grad_clip"])
        optimizer.step()
        ema.update(model)
        window.append(value)
        if step % train["log_every"] == 0 or step in snaps:
            rows.append({"step": step, "loss": sum(window) / len(window), "lr": lr,
                         "seconds": round(time.perf_counter() - start, 3)})
            bar.set_postfix(loss=f"{rows[-1]['loss']:.4f}", refresh=False)
            window = []
        if step in snaps:
            path = out / f"step_{step}.pt"
            snapshot(path, step, model, ema, optimizer, gens, config)
            write_csv(log_csv, LOG_COLUMNS, rows)
            written.append(path)
            log(f"step {step}: loss {rows[-1]['loss']:.4f}, snapshot {path}")
    bar.close()
    write_json(config_out, provenance("train", params, sde=sde_name, checkpoint=config,
                                      snapshots=[str(p) for p in written],
                                      seconds=round(time.perf_counter() - start, 1)))
    return written
