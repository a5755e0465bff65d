"""train: continuous-time denoising score matching (Song et al. 2021, eq. 7) for one SDE.

``python -m scoresde train`` is the command on one process, on several processes of one node
(``train.processes`` > 1: DistributedDataParallel, NCCL on GPUs, gloo on the CPU) and on several
nodes (``torchrun --nnodes ... -m scoresde train``). Its parts:

* :mod:`~scoresde.stages.train.loop`: building the model, the training loop and one step;
* :mod:`~scoresde.stages.train.resume`: snapshots, resuming after a kill, SIGTERM -> preempted;
* :mod:`~scoresde.stages.train.precision`: bf16 / fp16 autocast and loss scaling;
* :mod:`~scoresde.stages.train.distributed`: ranks, per-rank slices of the global batch, DDP
  and the loop's collectives (rank 0 writes);
* :mod:`~scoresde.stages.train.launch`: PyTorch's elastic launcher for ``train.processes`` > 1.
"""

from __future__ import annotations

from pathlib import Path

from scoresde.stages.common import StageError
from scoresde.stages.train.distributed import Ranks, init_distributed
from scoresde.stages.train.loop import TrainingError, fit, model_config, sde_config
from scoresde.stages.train.precision import check_precision
from scoresde.utils import pick_device

__all__ = ["TrainingError", "model_config", "run", "sde_config"]


def run(params: dict, data_path: str, sde_name: str, out_dir: str, log_csv: str,
        config_out: str, device_name: str = "auto", threads: int = 1,
        progress: bool = True) -> list[Path]:
    """Train one SDE; returns the snapshot paths.

    Resumable after a kill or SIGTERM (:mod:`~scoresde.stages.train.resume`). With
    ``train.processes`` > 1 and not started by a launcher (no WORLD_SIZE in the environment),
    this process starts the workers (:func:`~scoresde.stages.train.launch.launch`) and waits;
    a worker (WORLD_SIZE = train.processes) joins the process group and trains.
    """
    train = params["train"]
    ranks = Ranks.from_env()
    if ranks.world == 1 and train["processes"] > 1:
        from scoresde.stages.train.launch import launch

        paths = {"data": data_path, "out-dir": out_dir, "log-csv": log_csv,
                 "config-out": config_out}
        return launch(params, paths, sde_name, device_name, threads, run)
    if ranks.world != train["processes"]:
        raise StageError(f"train.processes is {train['processes']} but the launcher started "
                         f"{ranks.world} processes (WORLD_SIZE); set train.processes: "
                         f"{ranks.world}")
    device = pick_device(device_name)
    check_precision(train["precision"], device)
    args = (params, data_path, sde_name, out_dir, log_csv, config_out)
    if ranks.world == 1:
        return fit(*args, device, threads, progress, ranks)
    device = init_distributed(ranks, device)
    try:
        return fit(*args, device, threads, progress, ranks)
    finally:
        import torch.distributed as dist

        dist.destroy_process_group()
