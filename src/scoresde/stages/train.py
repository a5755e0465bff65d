"""train: continuous-time denoising score matching (Song et al. 2021, eq. 7) for one SDE.

Adam with a linear learning-rate warm-up and gradient-norm clipping, an EMA of the weights
(the EMA weights are what every later stage samples from), snapshots ``step_{k}.pt`` every
``train.snapshot_every`` steps (all kept) and a CSV of the training loss (step, loss, lr,
seconds; the mean loss over the last ``train.log_every`` steps).

Several processes (``train.processes`` > 1): DistributedDataParallel, NCCL on GPUs (one
process per GPU), gloo on the CPU. ``python -m scoresde train`` stays the command: with
``train.processes: N`` it starts N workers of itself (:func:`launch`, the environment contract
of torchrun: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) and waits for them; a
worker started by ``torchrun`` / ``srun torchrun`` (several nodes) trains directly. Every rank
draws the same global batch (indices, dequantisation noise, t, z) from identically seeded
generators and keeps its slice (:func:`rank_generators`), so N processes compute what one
process computes at the same global batch, up to the order of float reductions (measured in
tests/test_train_ddp.py). Only rank 0 writes snapshots, the loss CSV and log lines.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from scoresde.checkpoint import CheckpointError, atomic_write, load_checkpoint, save_checkpoint
from scoresde.cli import EXIT_PREEMPTED
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
from scoresde.utils import pick_device, seed_stream, seeded_generator

LOG_COLUMNS = ("step", "loss", "lr", "seconds")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
RESUME_DIR = "resume"  # beside the snapshots; not a Snakemake output
PREEMPT = "preempt.pt"  # the state written on SIGTERM between two snapshots


class TrainingError(FloatingPointError):
    """Training diverged (non-finite loss)."""


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes (torchrun's RANK, WORLD_SIZE,
    LOCAL_RANK); the default is a single process."""

    rank: int = 0
    world: int = 1
    local: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> Ranks:
        env = os.environ
        world = int(env.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        return cls(int(env["RANK"]), world, int(env.get("LOCAL_RANK", env["RANK"])))


def rank_generators(seed: int, device, rank: int = 0) -> dict[str, torch.Generator]:
    """The training run's random streams (call after the model is built).

    ``data`` (batch indices and dequantisation noise, CPU) and ``noise`` (t and z of the DSM
    loss, on the device) are seeded alike on every rank: each rank draws the whole global
    batch and keeps its slice. Drawing a batch costs nothing next to the network, and N
    processes then train exactly the one-process run at the same global batch (per-rank
    streams would train a different, equally valid run that no single process reproduces).
    Dropout draws from torch's global generator, which ranks > 0 reseed with their own seed so
    that their masks differ from rank 0's.
    """
    gens = {"data": seeded_generator(seed, "train-batches"),
            "noise": seeded_generator(seed, "train-noise", device=device)}
    if rank:
        torch.manual_seed(seed_stream(seed, "train-init", rank))
    return gens


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


def build(params: dict, sde_name: str, split: dict, device: torch.device, quiet: bool = False):
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
    if not quiet:
        log(f"{sde_name}: {type(model).__name__} with {count_params(model):,} parameters, "
            f"data in {'[-1, 1]' if config['centered'] else '[0, 1]'}"
            f"{', dequantised' if config['dequantize'] else ''}, device {device}")
    return model, ema, optimizer, sde, config


def snapshot_state(step: int, model, ema, optimizer, gens: dict, history: dict,
                   per_rank: list | None = None, scaler=None) -> dict:
    """Everything a resumed run needs to continue bit-identically from `step`.

    `per_rank`: every rank's global generator states (dropout), in distributed training.
    """
    rng = {"torch": torch.get_rng_state(), **{k: g.get_state() for k, g in gens.items()}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    if per_rank is not None:
        rng["ranks"] = per_rank
    state = {"model": model.state_dict(), "ema": ema.state_dict(),
             "optimizer": optimizer.state_dict(), "step": step, "rng": rng,
             "history": history}  # fmt: skip
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    return state


def restore_state(state: dict, model, ema, optimizer, gens: dict, rank: int = 0,
                  scaler=None) -> dict:
    """Load a snapshot_state into the objects of a fresh run; returns its history."""
    model.load_state_dict(state["model"])
    ema.load_state_dict(state["ema"])
    opt = dict(state["optimizer"])  # checkpoints store dict keys as strings
    opt["state"] = {int(k): v for k, v in opt["state"].items()}
    optimizer.load_state_dict(opt)
    rng = state["rng"]
    for name, gen in gens.items():
        gen.set_state(rng[name])
    if "ranks" in rng:  # written by a distributed run: this rank's own global streams
        rng = rng["ranks"][rank]
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
    elif "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    torch.set_rng_state(rng["torch"])
    if scaler is not None and "scaler" in state:
        scaler.load_state_dict(state["scaler"])
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
        for tmp in folder.glob(".tmp-*"):
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

    With ``train.processes`` > 1 and not started by torchrun, this process launches the
    workers (:func:`launch`) and waits for them.
    """
    train = params["train"]
    ranks = Ranks.from_env()
    paths = {"data": data_path, "out-dir": out_dir, "log-csv": log_csv,
             "config-out": config_out}
    if ranks.world == 1 and train["processes"] > 1:
        return launch(params, paths, sde_name, device_name, threads)
    if ranks.world != train["processes"]:
        raise StageError(f"train.processes is {train['processes']} but torchrun started "
                         f"{ranks.world} processes (WORLD_SIZE); set train.processes: "
                         f"{ranks.world}")
    device = pick_device(device_name)
    check_precision(train["precision"], device)
    if ranks.world == 1:
        return fit(params, data_path, sde_name, out_dir, log_csv, config_out, device, threads,
                   progress, ranks)
    device = init_distributed(ranks, device)
    try:
        return fit(params, data_path, sde_name, out_dir, log_csv, config_out, device,
                   threads, progress, ranks)
    finally:
        import torch.distributed as dist

        dist.destroy_process_group()


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
        write_csv(log_csv, LOG_COLUMNS, rows)
    net = wrap_ddp(model, device, ranks)

    start = time.perf_counter() - float(history["elapsed"])
    model.train()
    bar = tqdm(range(first, train["n_iters"] + 1), desc=f"train {sde_name}", file=sys.stderr,
               mininterval=10.0, ascii=True, disable=not (progress and ranks.main),
               initial=first - 1, total=train["n_iters"])
    with termination_signal() as signalled:
        for step in bar:
            value = train_step(net, ema, optimizer, sde, split["x"], config, train, step,
                               gens, dsm_loss, device, ranks, scaler)
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


def resume_point(out: Path, resume_dir: Path, config: dict, snaps: list[int], ranks: Ranks):
    """(state, path) to resume from, or None; rank 0 decides and cleans up, the others load
    the file it names."""
    found = None
    if ranks.main:
        remove_temporaries(out, resume_dir)
        found = find_resume(resume_dir, config, snaps) if resume_dir.is_dir() else None
        if not found and resume_dir.exists():
            shutil.rmtree(resume_dir)
    if ranks.world > 1:
        import torch.distributed as dist

        box = [str(found[1]) if found else None]
        dist.broadcast_object_list(box, src=0)
        if not ranks.main and box[0]:
            found = (load_checkpoint(box[0])[0], Path(box[0]))
    return found


def train_step(model, ema, optimizer, sde, k, config, train, step, gens, dsm_loss, device,
               ranks: Ranks = Ranks(), scaler=None):
    """One Adam step on a fresh batch (warm-up learning rate, clipping, EMA); the loss.

    Distributed: every rank draws the global batch and its t, z (as `dsm_loss` draws them)
    and takes the loss on its slice; DDP averages the gradients, so the step is the one of
    the global batch. The returned loss is the global mean on every rank, and all ranks skip
    a step whose loss is not finite together.
    """
    for group in optimizer.param_groups:
        group["lr"] = learning_rate(step, train["lr"], train["warmup"])
    x = model_batch(k, config, train["batch_size"], gens["data"]).to(device)
    kwargs = {"eps": train["eps"], "likelihood_weighting": train["likelihood_weighting"]}
    with autocast(train["precision"], device):
        if ranks.world == 1:
            loss = dsm_loss(model, sde, x, generator=gens["noise"], **kwargs)
        else:
            t, z = dsm_noise(sde, x, gens["noise"], train["eps"])
            part = rank_slice(len(x), ranks)
            loss = dsm_loss(model, sde, x[part], t=t[part], z=z[part], **kwargs)
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


# --------------------------------------------------------------------------- precision


def check_precision(precision: str, device: torch.device) -> None:
    if precision == "fp16" and device.type != "cuda":
        raise StageError(f"train.precision fp16 needs a CUDA GPU (device is {device}); on the "
                         "CPU use bf16 or fp32")


def autocast(precision: str, device: torch.device):
    """Mixed-precision forward pass (bf16 or fp16 autocast); fp32 runs as is."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(precision: str, device: torch.device):
    """fp16 needs loss scaling against gradient underflow; bf16 and fp32 do not."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None


# --------------------------------------------------------------------------- distributed


def rank_slice(batch: int, ranks: Ranks) -> slice:
    """This rank's equal share of the global batch (train.batch_size % processes == 0)."""
    size = batch // ranks.world
    return slice(ranks.rank * size, (ranks.rank + 1) * size)


def dsm_noise(sde, x: torch.Tensor, gen: torch.Generator, eps: float):
    """t ~ U(eps, T) and z ~ N(0, I) for the global batch, drawn as `dsm_loss` draws them."""
    from scoresde.utils import rand, randn

    t = rand((x.shape[0],), gen, device=x.device, dtype=x.dtype) * (sde.T - eps) + eps
    return t, randn(x.shape, gen, device=x.device, dtype=x.dtype)


def global_mean(loss: torch.Tensor, ranks: Ranks) -> float:
    """The mean of the ranks' losses (= the global batch's loss), on every rank."""
    if ranks.world == 1:
        return loss.item()
    import torch.distributed as dist

    total = loss.detach().float().clone()
    dist.all_reduce(total)
    return total.item() / ranks.world


def agree_to_stop(signalled: list[str], ranks: Ranks, device: torch.device) -> str:
    """The signal's name if any rank received SIGTERM (all ranks stop at the same step)."""
    if ranks.world == 1:
        return signalled[0] if signalled else ""
    import torch.distributed as dist

    flag = torch.tensor([1.0 if signalled else 0.0], device=device)
    dist.all_reduce(flag)
    return "SIGTERM" if flag.item() > 0 else ""


def rank_rng_states(ranks: Ranks, device: torch.device) -> list | None:
    """Every rank's global generator states (a collective: all ranks call it)."""
    if ranks.world == 1:
        return None
    import torch.distributed as dist

    mine = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        mine["cuda"] = torch.cuda.get_rng_state(device)
    states = [None] * ranks.world
    dist.all_gather_object(states, mine)
    return states


def wrap_ddp(model, device: torch.device, ranks: Ranks):
    if ranks.world == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def init_distributed(ranks: Ranks, device: torch.device) -> torch.device:
    """Join the process group (NCCL for GPUs, gloo on the CPU); this rank's device."""
    import torch.distributed as dist

    if device.type == "cuda":
        if ranks.local >= torch.cuda.device_count():
            raise StageError(f"process {ranks.local} on this node has no GPU: "
                             f"{torch.cuda.device_count()} visible; start at most that many "
                             "processes per node")
        device = torch.device("cuda", ranks.local)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=ranks.rank,
                            world_size=ranks.world)
    if ranks.main:
        log(f"distributed: {ranks.world} processes ({dist.get_backend()})")
    return device


def check_processes(train: dict, device: torch.device) -> None:
    """A clear error before any worker starts."""
    n = train["processes"]
    if train["batch_size"] % n:
        raise StageError(f"train.batch_size {train['batch_size']} is not a multiple of "
                         f"train.processes {n}; every process takes an equal share")
    if device.type == "cuda" and n > torch.cuda.device_count():
        raise StageError(f"train.processes is {n} but {torch.cuda.device_count()} CUDA GPU(s) "
                         f"are visible; ask for {n} GPUs (train.resources.gpu; the SLURM "
                         f"profile passes it as --gpus) or set train.processes: "
                         f"{torch.cuda.device_count()}")


def launch(params: dict, paths: dict, sde_name: str, device_name: str,
           threads: int) -> list[Path]:
    """Start ``train.processes`` workers of this command on this node and wait for them.

    Each worker is ``python -m scoresde train`` with the resolved parameters and torchrun's
    environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), so it is exactly
    what ``torchrun --nproc-per-node N -m scoresde train ...`` would start. A small launcher
    rather than torchrun's agent: SIGTERM is forwarded and a preempted run still exits with
    the preemption code, the workers die with this process (a killed job leaves nothing
    writing), and a failing worker stops the others at once. Threads are split evenly.
    """
    from scoresde.utils import pick_device

    train = params["train"]
    n = train["processes"]
    device = pick_device(device_name)
    check_precision(train["precision"], device)
    check_processes(train, device)
    log(f"launching {n} training processes ({'NCCL' if device.type == 'cuda' else 'gloo'}), "
        f"global batch {train['batch_size']} = {n} x {train['batch_size'] // n}")
    cmd = [sys.executable, "-m", "scoresde", "train", "--params-json", json.dumps(params),
           "--sde", sde_name, *[a for k, v in paths.items() for a in (f"--{k}", str(v))],
           "--device", device.type, "--threads", str(max(1, threads // n))]
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
           "WORLD_SIZE": str(n), "LOCAL_WORLD_SIZE": str(n)}
    procs = []
    try:
        with forward_sigterm(procs) as signalled:
            for r in range(n):
                procs.append(subprocess.Popen(cmd, env={**env, "RANK": str(r),
                                                        "LOCAL_RANK": str(r)},
                                              preexec_fn=die_with_parent))
            codes, stopped = wait_for(procs)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    # name the worker that failed by itself, not one this launcher stopped because of it
    failed = [(r, c) for r, c in enumerate(codes)
              if c not in (0, EXIT_PREEMPTED) and r not in stopped]
    if failed:
        rank, code = failed[0]
        raise StageError(f"training process {rank} of {n} exited with code {code} (its error "
                         "is above)")
    if any(c == EXIT_PREEMPTED for c in codes):
        raise Preempted(f"{signalled[0] if signalled else 'SIGTERM'}: the training processes "
                        f"wrote {Path(paths['out-dir']) / RESUME_DIR / PREEMPT}; run the same "
                        "command (snakemake: --rerun-incomplete) to resume")
    snaps = snapshot_steps(train["n_iters"], train["snapshot_every"])
    return [Path(paths["out-dir"]) / f"step_{k}.pt" for k in snaps]



def wait_for(procs: list[subprocess.Popen]) -> tuple[list[int], set[int]]:
    """Exit codes of all workers, and the ranks this function stopped: the first worker that
    fails (not preempted) ends the others, which then exit with -SIGKILL."""
    while True:
        codes = [p.poll() for p in procs]
        if all(c is not None for c in codes):
            return codes, set()
        if any(c not in (None, 0, EXIT_PREEMPTED) for c in codes):
            stopped = {r for r, c in enumerate(codes) if c is None}
            for r in stopped:
                procs[r].kill()
            return [p.wait() for p in procs], stopped
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def die_with_parent() -> None:
    """(Linux) the worker gets SIGKILL when the launcher dies."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@contextmanager
def forward_sigterm(procs: list):
    """Pass SIGTERM on to the workers (main thread only); yields the names received."""
    received: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def forward(signum, frame):
        received.append("SIGTERM")
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


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
