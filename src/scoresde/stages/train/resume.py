"""Snapshots, resuming and preemption.

Every snapshot ``step_{k}.pt`` is also kept (hard-linked) under ``out_dir/resume/``, which is not
a Snakemake output and so survives the clean-up of a failed or killed job; a rerun with the same
parameters continues from the newest complete one, bit-identically on CPU (model, EMA, optimizer,
every random stream and the loss history are in the snapshot). SIGTERM (what SLURM sends before
a time limit) makes the loop write ``resume/preempt.pt`` at the end of the current step and stop
with `Preempted` (exit code 143). The resume folder is removed once training is done.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
from contextlib import contextmanager
from pathlib import Path

import torch

from scoresde.checkpoint import CheckpointError, atomic_write, load_checkpoint
from scoresde.stages.common import log
from scoresde.stages.train.distributed import Ranks, from_main

RESUME_DIR = "resume"  # beside the snapshots; not a Snakemake output
PREEMPT = "preempt.pt"  # the state written on SIGTERM between two snapshots


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


def resume_point(out: Path, resume_dir: Path, config: dict, snaps: list[int], ranks: Ranks):
    """(state, path) to resume from, or None; rank 0 decides and cleans up, the others load
    the file it names."""
    found = None
    if ranks.main:
        remove_temporaries(out, resume_dir)
        found = find_resume(resume_dir, config, snaps) if resume_dir.is_dir() else None
        if not found and resume_dir.exists():
            shutil.rmtree(resume_dir)
    path = from_main(str(found[1]) if found else None, ranks)
    if not ranks.main and path:
        found = (load_checkpoint(path)[0], Path(path))
    return found


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
