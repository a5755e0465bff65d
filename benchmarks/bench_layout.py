"""The pipeline's model layout on the CPU: ``scoresde.models.to_device`` (convolution weights
channels-last) against the plain NCHW model, for the three kinds of network work the default DAG
does with the default 8x8 U-Net (16 channels, as ``params.yaml``):

* sampling: a forward pass at the sample stage's batch (400),
* likelihood: a forward pass plus the vector-Jacobian product of the Hutchinson divergence at the
  likelihood stage's batch (297 test images),
* training: one DSM step (loss, backward, clipping, Adam) at the train stage's batch (128).

Both layouts are timed in alternation (best of N, and the median of back-to-back ratios), with an
A/A copy of the NCHW model for the noise floor; the outputs are checked equal.

    python benchmarks/bench_layout.py [--quick] [--threads 1]
"""

from __future__ import annotations

import torch
from benchlib import Check, Report, Table, cli_main, dsm_step, paired_ratio, race

from scoresde import VPSDE
from scoresde.models import UNet, to_device

LAYOUTS = ("nchw", "nchw (A/A)", "to_device")


def _nets(train: bool):
    torch.manual_seed(0)
    base = UNet(8, 1, channels=16, channel_mult=(1, 2), embedding="positional")
    nets = {}
    for name in LAYOUTS:
        net = UNet(8, 1, channels=16, channel_mult=(1, 2), embedding="positional")
        net.load_state_dict(base.state_dict())
        net = to_device(net, "cpu") if name == "to_device" else net
        nets[name] = net.train(train).requires_grad_(train)
    return nets


def _work(kind: str, batch: int, reps: int):
    """{layout: closure doing ``reps`` units of ``kind``}, and the closures' first outputs."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 1, 8, 8, generator=gen)
    t = torch.rand(batch, generator=gen) * 0.99 + 0.01
    v = torch.randint(0, 2, x.shape, generator=gen).float() * 2 - 1
    nets = _nets(kind == "training")
    fns = {}
    for name, net in nets.items():
        if kind == "sampling":
            def fn(net=net, x=x):
                with torch.no_grad():
                    for _ in range(reps):
                        out = net(x, t)
                return out
        elif kind == "likelihood":
            def fn(net=net, x=x):
                for _ in range(reps):
                    y = x.detach().requires_grad_(True)
                    (g,) = torch.autograd.grad(net(y, t), y, grad_outputs=v)
                return (g * v).flatten(1).sum(1)
        else:
            opt, sde = torch.optim.Adam(net.parameters(), lr=1e-4), VPSDE()
            step_gen = torch.Generator().manual_seed(2)

            def fn(net=net, x=x, opt=opt, sde=sde, step_gen=step_gen):
                for _ in range(reps):
                    loss = dsm_step(net, net, opt, sde, x, step_gen)
                return loss
        fns[name] = fn
    return fns


def run(quick: bool = False) -> Report:
    repeats = 3 if quick else 7
    table = Table("Model layout on the CPU: to_device (channels-last) / NCHW",
                  ["work", "batch", "NCHW ms", "to_device ms", "ratio (best)", "ratio (paired)",
                   "A/A", "max |difference|"])
    checks = []
    for kind, batch, reps in (("sampling", 400, 5), ("likelihood", 297, 3), ("training", 128, 5)):
        if quick:
            batch, reps = batch // 8, 1
        fns = _work(kind, batch, reps)
        outs = {name: fn() for name, fn in fns.items()}  # one step each, from the same state
        diff = float((outs["to_device"].double() - outs["nchw"].double()).abs().max())
        fns = _work(kind, batch, reps)  # fresh optimisers for the timed race
        rounds: dict = {}
        best = race(fns, repeats=repeats, rounds=rounds)
        ratio = best["to_device"] / best["nchw"]
        paired = paired_ratio(rounds, "to_device", "nchw")
        noise = abs(paired_ratio(rounds, "nchw (A/A)", "nchw") - 1)
        table.rows.append([kind, batch, best["nchw"] / reps * 1e3, best["to_device"] / reps * 1e3,
                           ratio, paired, noise, diff])
        checks.append(Check(f"{kind}: to_device / NCHW", paired, 1.0, noise=noise,
                            note="lower is faster", agree=diff < 1e-3))
    table.notes.append("max |difference|: of the two layouts' outputs (samples: the network's "
                       "output; likelihood: the per-image v^T J v; training: the first step's loss)")
    return Report("layout", tables=[table], checks=checks)


if __name__ == "__main__":
    cli_main(run, __doc__)
