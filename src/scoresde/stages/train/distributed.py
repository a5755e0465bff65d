"""Training on several processes: ranks, random streams, DistributedDataParallel and the few
collectives the loop needs (NCCL on GPUs, gloo on the CPU).

Every rank draws the same global batch (indices, dequantisation noise, t, z) from identically
seeded generators and keeps its slice (:func:`rank_generators`, :func:`rank_slice`), so N
processes compute what one process computes at the same global batch, up to the order of float
reductions. Every function here is also correct, and free of collectives, for one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from scoresde.stages.common import StageError, log
from scoresde.utils import seed_stream, seeded_generator


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


SINGLE = Ranks()  # one process


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


def rank_slice(batch: int, ranks: Ranks) -> slice:
    """This rank's equal share of the global batch (train.batch_size % processes == 0)."""
    size = batch // ranks.world
    return slice(ranks.rank * size, (ranks.rank + 1) * size)


def dsm_noise(sde, x: torch.Tensor, gen: torch.Generator, eps: float,
              noise_distribution: str = "uniform", p_mean: float = -1.2, p_std: float = 1.2,
              **_loss_options):
    """t (``losses.sample_times``) and z ~ N(0, I) for the global batch, drawn as `dsm_loss`
    draws them; the loss's other options are ignored."""
    from scoresde.losses import sample_times
    from scoresde.utils import randn

    t = sample_times(sde, x.shape[0], gen, eps, noise_distribution, p_mean, p_std, x.device, x.dtype)
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


def from_main(value, ranks: Ranks):
    """Rank 0's `value` on every rank (a picklable object; a collective)."""
    if ranks.world == 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


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
