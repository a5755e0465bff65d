"""Starting the training processes of one node with PyTorch's elastic launcher.

``python -m scoresde train`` with ``train.processes: N`` (and not itself started by a launcher)
runs what ``torchrun --standalone --nproc-per-node N -m scoresde train ...`` runs: an elastic
agent (:func:`torch.distributed.launcher.api.elastic_launch`, c10d rendezvous on a free local
port, no restarts) starts N workers, each the same ``train`` command with torchrun's environment
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), and waits for them. The agent stops
the others as soon as one fails; the workers die with the agent (torch.multiprocessing's
parent-death signal); SIGTERM reaches the workers, which write the preemption snapshot at the
end of their step (within ``TORCH_ELASTIC_SHUTDOWN_TIMEOUT``, 30 s by default) and the command
still exits with the preemption code. Several nodes: start the same command under ``torchrun
--nnodes`` on every node (docs/training.md); the workers then train directly.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from scoresde.stages.common import Preempted, StageError, log
from scoresde.stages.config import snapshot_steps
from scoresde.stages.exits import EXIT_PREEMPTED, exit_code
from scoresde.stages.train.distributed import check_processes
from scoresde.stages.train.precision import check_precision
from scoresde.stages.train.resume import PREEMPT, RESUME_DIR
from scoresde.utils import pick_device

HANDLED = (signal.SIGTERM, signal.SIGINT)  # the agent passes these on to the workers


def launch(params: dict, paths: dict, sde_name: str, device_name: str,
           threads: int, entry: Callable[..., object]) -> list[Path]:
    """Train with ``train.processes`` workers on this node; the snapshot paths.

    `paths`: the train command's path arguments by option name (data, out-dir, log-csv,
    config-out). Each worker calls `entry` (the train stage's ``run``, passed in so that this
    module imports neither it nor the command line) with the same arguments as the command;
    threads are split evenly between the workers.
    """
    train = params["train"]
    n = train["processes"]
    device = pick_device(device_name)
    check_precision(train["precision"], device)
    check_processes(train, device)
    log(f"launching {n} training processes ({'NCCL' if device.type == 'cuda' else 'gloo'}), "
        f"global batch {train['batch_size']} = {n} x {train['batch_size'] // n}")
    args = (params, str(paths["data"]), sde_name, str(paths["out-dir"]), str(paths["log-csv"]),
            str(paths["config-out"]))
    options = {"device_name": device.type, "threads": max(1, threads // n)}
    preempt = Path(paths["out-dir"]) / RESUME_DIR / PREEMPT
    start_workers(n, worker, (entry, args, options, os.getpid()), preempt)
    snaps = snapshot_steps(train["n_iters"], train["snapshot_every"])
    return [Path(paths["out-dir"]) / f"step_{k}.pt" for k in snaps]


def worker(entry: Callable[..., object], args: tuple, options: dict, launcher: int) -> None:
    """One training process: ``entry(*args, **options)`` as ``python -m scoresde train`` runs
    it (:func:`~scoresde.stages.exits.exit_code`), exiting with its code (2: bad input, 143:
    preempted).

    torch.multiprocessing has already set the parent-death signal when this runs; a launcher
    that died before that (while the worker started) is seen here, and the worker stops.
    """
    if os.getppid() != launcher:
        sys.exit(f"error: the launcher (process {launcher}) is gone")
    code = exit_code(lambda: entry(*args, **options))
    if code:
        sys.exit(code)


def start_workers(n: int, entrypoint, args: tuple, preempt: Path) -> None:
    """Run `entrypoint(*args)` in `n` processes under an elastic agent; a failed worker becomes
    one line naming it, SIGTERM becomes `Preempted`.

    Only the worker that failed by itself is named, never one the agent stopped because of it.
    """
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    with tempfile.TemporaryDirectory(prefix="scoresde-launch-") as logs, restored_handlers(), \
            no_tracebacks("torch.distributed.elastic.multiprocessing"):
        config = LaunchConfig(
            min_nodes=1, max_nodes=1, nproc_per_node=n, run_id=uuid.uuid4().hex,
            rdzv_backend="c10d", rdzv_endpoint="127.0.0.1:0", local_addr="127.0.0.1",
            max_restarts=0, start_method="spawn", logs_specs=DefaultLogsSpecs(log_dir=logs),
            signals_to_handle=",".join(s.name for s in HANDLED))  # fmt: skip
        try:
            elastic_launch(config, entrypoint)(*args)
        except ChildFailedError as err:
            rank, failure = err.get_first_failure()
            if failure.exitcode == EXIT_PREEMPTED:
                raise Preempted(preempted_text(f"process {rank} was stopped", preempt)) from None
            raise StageError(f"training process {rank} of {n} exited with code "
                             f"{failure.exitcode} (its error is above)") from None
        except SignalException as sig:
            if sig.sigval != signal.SIGTERM:
                raise KeyboardInterrupt from None
            raise Preempted(preempted_text(sig.sigval.name, preempt)) from None


def preempted_text(why: str, preempt: Path) -> str:
    if preempt.is_file():
        return (f"{why}: the training processes wrote {preempt}; run the same command "
                "(snakemake: --rerun-incomplete) to resume")
    return (f"{why} before the training processes wrote {preempt}; a rerun resumes from the "
            "newest snapshot")


@contextmanager
def no_tracebacks(logger: str):
    """The agent's log lines without their tracebacks (its own, not the workers'): a failed
    worker is one line there, beside the worker's own error line."""

    def strip(record: logging.LogRecord) -> bool:
        record.exc_info, record.exc_text = None, None
        return True

    log_ = logging.getLogger(logger)
    while not log_.handlers and log_.propagate and log_.parent:
        log_ = log_.parent
    handlers = list(log_.handlers)
    for h in handlers:
        h.addFilter(strip)
    try:
        yield
    finally:
        for h in handlers:
            h.removeFilter(strip)


@contextmanager
def restored_handlers():
    """The agent installs its own signal handlers (main thread only) and leaves them; put the
    caller's back."""
    previous = {s: signal.getsignal(s) for s in HANDLED}
    try:
        yield
    finally:
        if threading.current_thread() is threading.main_thread():
            for s, handler in previous.items():
                signal.signal(s, handler)
