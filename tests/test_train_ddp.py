"""Training on several processes (DistributedDataParallel, gloo on the CPU) under PyTorch's
elastic launcher, on one node and on two "nodes" (two agents on this host, c10d rendezvous),
mixed precision, and their configuration errors.

Two processes at global batch B train what one process trains at batch B: every rank draws
the same global batch and noise and keeps its half, and DDP averages the gradients. They
differ only in the order of float reductions (measured: loss curve 1.2e-7, EMA weights 1.5e-6 to
2.4e-6 after 40 Adam steps at lr 2e-3; the tests allow 1e-5). Two nodes of one process each
train bit-identically what one node of two processes trains.
"""

from __future__ import annotations

import csv
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from scoresde.checkpoint import load_checkpoint
from scoresde.cli import EXIT_PREEMPTED, main

PARAMS = """
model: {channels: 8, channel_mult: [1, 2]}
train: {n_iters: 40, snapshot_every: 10, batch_size: 32, log_every: 1, warmup: 5}
"""
SNAPS = (10, 20, 30, 40)
TOL = 1e-5


def run(*args) -> int:
    return main([str(a) for a in args])


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("ddp")
    (d / "params.yaml").write_text(PARAMS)
    assert run("prepare-data", "--params", d / "params.yaml", "--train-out", d / "train.pt",
               "--test-out", d / "test.pt", "--reference-out", d / "reference.pt") == 0
    return d


def train_args(data: Path, out: Path, *sets: str, threads: int = 2, extra=()) -> list:
    """Two threads: one per process for two processes."""
    sets = [a for s in sets for a in ("--set", s)]
    return ["train", "--params", data / "params.yaml", "--data", data / "train.pt", "--sde",
            "vp", "--out-dir", out, "--log-csv", out / "train_log.csv", "--config-out",
            out / "config.json", "--threads", threads, "--device", "cpu", *sets, *extra]


def losses(out: Path) -> list[float]:
    with open(out / "train_log.csv") as f:
        return [float(row["loss"]) for row in csv.DictReader(f)]


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def two(data) -> Path:
    """An uninterrupted run on two processes."""
    out = data / "two"
    assert run(*train_args(data, out, "train.processes=2")) == 0
    return out


@pytest.mark.slow
def test_two_processes_train_what_one_process_trains(data, two, capsys):
    one = data / "one"
    assert run(*train_args(data, one, "train.processes=1", threads=1)) == 0
    assert "launching 2 training processes (gloo)" not in capsys.readouterr().err
    la, lb = losses(one), losses(two)
    assert len(la) == len(lb) == 40
    loss_diff = max(abs(a - b) for a, b in zip(la, lb, strict=True))
    sa, ca = load_checkpoint(one / "step_40.pt")
    sb, cb = load_checkpoint(two / "step_40.pt")
    ema_diff = max_diff(sa["ema"]["shadow"], sb["ema"]["shadow"])
    print(f"1 vs 2 processes: max |loss diff| {loss_diff:.2e}, max |EMA diff| {ema_diff:.2e}")
    assert loss_diff <= TOL and ema_diff <= TOL
    assert ema_diff > 0  # two real processes: the reductions do differ a little
    assert ca["train"]["processes"] == 1 and cb["train"]["processes"] == 2
    # every rank kept the same weights, so rank 0's snapshot is the run's
    assert sorted(p.name for p in two.glob("step_*.pt")) == [f"step_{k}.pt" for k in SNAPS]
    assert len(sb["rng"]["ranks"]) == 2 and not (two / "resume").exists()


def start_and_signal(data: Path, out: Path, sig: int, after: str = "resume/step_10.pt"):
    """Start a two-process run in a real process; send `sig` to the launcher once `after`
    exists."""
    cmd = [sys.executable, "-m", "scoresde",
           *map(str, train_args(data, out, "train.processes=2"))]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600  # generous: a loaded machine trains slowly
    while not (out / after).exists() and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.005)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=600)
    return proc.returncode, stderr


def assert_bit_identical(a: Path, b: Path) -> None:
    for k in SNAPS:
        sa, ca = load_checkpoint(a / f"step_{k}.pt")
        sb, cb = load_checkpoint(b / f"step_{k}.pt")
        assert ca == cb
        for key in ("model", "optimizer", "ema", "rng"):
            torch.testing.assert_close(sa[key], sb[key], rtol=0, atol=0)
    assert losses(a) == losses(b)


@pytest.mark.slow
def test_sigterm_under_ddp_then_rerun_resumes_bit_identically(data, two, capfd):
    out = data / "terminated"
    code, stderr = start_and_signal(data, out, signal.SIGTERM)
    assert code == EXIT_PREEMPTED, stderr
    assert stderr.strip().splitlines()[-1].startswith("stopped: SIGTERM: the training processes")
    assert "Traceback" not in stderr
    steps = {line.split("at step ")[1].split(":")[0] for line in stderr.splitlines()
             if line.startswith("stopped: SIGTERM at step ")}
    assert len(steps) == 1, stderr  # both ranks stopped at the same step
    step = int(steps.pop())
    assert (out / "resume/preempt.pt").exists() and 10 <= step < 40
    for name in ("step_10.pt", "step_20.pt", "step_30.pt", "train_log.csv"):
        (out / name).unlink(missing_ok=True)  # what Snakemake removes before the rerun
    capfd.readouterr()
    assert run(*train_args(data, out, "train.processes=2")) == 0
    assert f"resuming from step {step} " in capfd.readouterr().err  # rank 0's log line
    assert_bit_identical(two, out)


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie left for an init that does not reap)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def workers(pid: int) -> list[int]:
    """The launcher's worker processes (torch.multiprocessing spawns them)."""
    return [c for c in children(pid)
            if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize("when", ["starting", "training"])
def test_a_killed_launcher_takes_its_workers_with_it(data, tmp_path, when):
    """A SIGKILLed job (OOM killer, a lost Snakemake) must leave nothing writing into its
    outputs: the workers die with the launcher, whether they are still starting or training."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "scoresde", *map(str, train_args(data, out, "train.processes=2"))]
    proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and (
            len(pids := workers(proc.pid)) < 2
            or (when == "training" and not (out / "resume/step_10.pt").exists())):
        time.sleep(0.01)
    assert len(pids) == 2
    proc.kill()
    proc.wait()
    try:
        deadline = time.monotonic() + 300  # a worker may still be starting python and torch
        while any(map(alive, pids)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(map(alive, pids))
    finally:
        for pid in filter(alive, pids):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_a_failing_worker_fails_the_run(data, tmp_path, capsys):
    code = run(*train_args(data, tmp_path / "out", "train.processes=2",
                           extra=("--data", tmp_path / "missing.pt")))
    assert code == 2
    err = capsys.readouterr().err
    # both workers fail on the missing file; whichever ends first is named, never one the
    # launcher stopped (-9)
    assert re.search(r"training process [01] of 2 exited with code 2 \(its error is above\)",
                     err), err


def exit_by_rank(codes: dict[int, int]) -> None:
    """A worker that exits with codes[RANK] at once, or sleeps until it is stopped."""
    code = codes.get(int(os.environ["RANK"]))
    if code is None:
        time.sleep(600)
    sys.exit(code)


def test_the_launcher_names_the_worker_that_failed_not_the_ones_it_stopped(tmp_path):
    from scoresde.stages.common import StageError
    from scoresde.stages.train.launch import start_workers

    start = time.monotonic()
    with pytest.raises(StageError, match=r"^training process 1 of 2 exited with code 3 "):
        start_workers(2, exit_by_rank, ({1: 3},), tmp_path / "preempt.pt")
    assert time.monotonic() - start < 500  # the sleeping worker was stopped, not waited for
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the caller's handler is back


@pytest.mark.parametrize("written", [False, True])
def test_a_worker_that_exits_preempted_preempts_the_run(tmp_path, monkeypatch, written):
    """A worker SIGTERMed by itself (not through the launcher) exits 143: the run is preempted,
    and the message says whether the preemption snapshot is there."""
    import torch.distributed.launcher.api as api
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    from scoresde.stages.common import Preempted
    from scoresde.stages.train.launch import start_workers

    def launcher(config, entrypoint):
        def run(*args):
            failure = ProcessFailure(1, 1234, EXIT_PREEMPTED, str(tmp_path / "none.json"))
            raise ChildFailedError("worker", {1: failure})
        return run

    monkeypatch.setattr(api, "elastic_launch", launcher)
    if written:
        (tmp_path / "preempt.pt").touch()
    words = "the training processes wrote" if written else "before the training processes wrote"
    with pytest.raises(Preempted, match=f"^process 1 was stopped:? {words} "):
        start_workers(2, exit_by_rank, ({},), tmp_path / "preempt.pt")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_of_one_process_train_what_one_node_of_two_trains(data, two):
    """The multi-node launch of docs/training.md: one ``torchrun`` agent per node meeting by
    c10d rendezvous (here two agents on this host)."""
    out, port = data / "two_nodes", free_port()
    agent = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2",
             "--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint",
             f"127.0.0.1:{port}", "--rdzv-id", f"two-nodes-{port}", "--max-restarts", "0",
             "-m", "scoresde", *map(str, train_args(data, out, "train.processes=2", threads=1))]
    nodes = [subprocess.Popen(agent, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errs = [node.communicate(timeout=900)[1] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], errs
    assert sum("distributed: 2 processes (gloo)" in err for err in errs) == 1  # one rank 0
    assert_bit_identical(two, out)
    assert not (out / "resume").exists()


@pytest.mark.parametrize(
    "sets, words",
    [(["train.processes=0"], "train.processes: 0 is less than the minimum of 1"),
     (["train.precision=fp8"], "train.precision: 'fp8' is not one of"),
     (["train.processes=3"], "train.batch_size 32 must be a multiple of train.processes 3"),
     (["train.precision=fp16"], "train.precision fp16 needs a CUDA GPU (device is cpu)"),
     (["train.resources.gpu=2"], "train.resources.gpu asks for 2 GPUs but train.processes is 1")],
)
def test_configuration_errors(data, tmp_path, capsys, sets, words):
    assert run(*train_args(data, tmp_path / "out", *sets)) == 2
    assert words in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_rank_slices_of_the_global_draw_give_the_global_loss_and_gradient():
    """What each DDP rank computes (its half of the global batch, t and z) averages to the
    one-process loss and gradient: the basis of the equivalence above, without processes."""
    from scoresde.losses import dsm_loss
    from scoresde.models import build_model
    from scoresde.sde import VPSDE
    from scoresde.stages.train.distributed import Ranks, dsm_noise, rank_slice

    torch.manual_seed(0)
    model = build_model({"arch": "unet", "channels": 8, "channel_mult": [1, 2],
                         "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0,
                         "embedding": "positional", "fourier_scale": 16.0, "image_size": 8,
                         "in_channels": 1}).double()
    sde, x = VPSDE(), torch.randn(8, 1, 8, 8, dtype=torch.float64)
    full = dsm_loss(model, sde, x, generator=torch.Generator().manual_seed(3), eps=1e-5)
    grads = torch.autograd.grad(full, list(model.parameters()))
    t, z = dsm_noise(sde, x, torch.Generator().manual_seed(3), 1e-5)
    parts, part_grads = [], []
    for rank in (0, 1):
        s = rank_slice(len(x), Ranks(rank, 2))
        loss = dsm_loss(model, sde, x[s], t=t[s], z=z[s])
        parts.append(loss)
        part_grads.append(torch.autograd.grad(loss, list(model.parameters())))
    torch.testing.assert_close((parts[0] + parts[1]) / 2, full, rtol=1e-12, atol=0)
    for g, g0, g1 in zip(grads, *part_grads, strict=True):
        torch.testing.assert_close((g0 + g1) / 2, g, rtol=1e-10, atol=1e-12)


def test_more_processes_than_gpus_is_refused(data, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    args = train_args(data, tmp_path / "out", "train.processes=2")
    args[args.index("--device") + 1] = "cuda"
    assert run(*args) == 2
    err = capsys.readouterr().err
    assert "train.processes is 2 but 1 CUDA GPU(s) are visible" in err
    assert "train.resources.gpu" in err


def test_bf16_autocast_on_the_cpu_trains_near_fp32(data, tmp_path):
    """bf16 keeps 8 bits of mantissa: the loss curve stays within a few per cent of fp32."""
    few = ("train.n_iters=6", "train.snapshot_every=6")
    assert run(*train_args(data, tmp_path / "fp32", *few, threads=1)) == 0
    assert run(*train_args(data, tmp_path / "bf16", *few, "train.precision=bf16",
                           threads=1)) == 0
    a, b = losses(tmp_path / "fp32"), losses(tmp_path / "bf16")
    assert a != b  # autocast did run in bf16
    assert max(abs(x - y) / x for x, y in zip(a, b, strict=True)) < 0.05
    state, _ = load_checkpoint(tmp_path / "bf16" / "step_6.pt")
    assert all(v.dtype == torch.float32 for v in state["model"].values()
               if v.is_floating_point())
