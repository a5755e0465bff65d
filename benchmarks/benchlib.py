"""Shared helpers for the benchmarks: the score network, side-by-side timing, optional packages, tables.

Every comparison times the candidates in alternation (round-robin, the order rotated each round) and
keeps each one's best wall time, so a load spike on this shared machine hits all of them alike.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import statistics
import sys
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from scoresde.models import UNet


# --- the score network ----------------------------------------------------------------------------
def default_unet(sde_name: str = "ve", seed: int = 0, channels: int = 32, image_size: int = 8) -> UNet:
    """The pipeline's default network (params.yaml: 8x8 digits, 32 channels, mult (1, 2)), in eval mode.

    The output conv is zero-initialised, which would make every score zero; it gets small random
    weights so that the samplers do real work (an untrained score: fine for timing, not for NFE).
    """
    torch.manual_seed(seed)
    embedding = "fourier" if sde_name == "ve" else "positional"
    net = UNet(image_size=image_size, in_channels=1, channels=channels, channel_mult=(1, 2),
               num_res_blocks=1, embedding=embedding)
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                p.normal_(0.0, 0.05)
    return net.eval()


def dsm_step(forward, net: torch.nn.Module, opt, sde, x: torch.Tensor, gen) -> torch.Tensor:
    """One Adam step of denoising score matching on ``x`` with gradient-norm clipping at 1, as
    the train stage takes it; ``forward`` evaluates ``net`` (``net`` itself, or compiled).
    Returns the detached loss."""
    from scoresde import dsm_loss

    loss = dsm_loss(forward, sde, x, generator=gen)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
    opt.step()
    return loss.detach()


def trained_unet(sde, steps: int = 100, batch: int = 32, channels: int = 32, seed: int = 0) -> UNet:
    """The default network after ``steps`` DSM steps on dequantised digits in [-1, 1] (Adam 2e-3).

    An untrained score is far rougher than a trained one, and adaptive solvers then take several
    times the NFE they take on real models; a hundred steps already give a digits-like score.
    """
    from scoresde import uniform_dequantize
    from scoresde.data import load_dataset

    net = default_unet(sde.name, seed, channels).train()
    k = load_dataset("digits", "train").x
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(len(k), (batch,), generator=gen)
        dsm_step(net, net, opt, sde, 2 * uniform_dequantize(k[idx], 17, gen) - 1, gen)
    return net.eval()


# --- timing ---------------------------------------------------------------------------------------
def race(fns: dict[str, Callable[[], object]], repeats: int = 3, warmup: int = 1,
         keep: dict | None = None, rounds: dict | None = None) -> dict[str, float]:
    """Best-of-``repeats`` wall time (s) of each callable, timed in alternation.

    ``keep``, when given, receives each callable's first timed return value (an expensive run whose
    answer is also wanted need not be repeated for it); ``rounds`` receives every round's time per
    callable, for :func:`paired_ratio`.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    names = list(fns)
    best = dict.fromkeys(names, math.inf)
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            t0 = time.perf_counter()
            out = fns[name]()
            elapsed = time.perf_counter() - t0
            best[name] = min(best[name], elapsed)
            if rounds is not None:
                rounds.setdefault(name, []).append(elapsed)
            if keep is not None and name not in keep:
                keep[name] = out
    return best


def paired_ratio(rounds: dict, a: str, b: str, scale: float = 1.0) -> float:
    """Median over rounds of time(a) / time(b) (times ``scale``): the two ran back to back in each round,
    so a load that drifts during the race cancels, where a ratio of two best-ofs would not."""
    return statistics.median(ta / tb for ta, tb in zip(rounds[a], rounds[b], strict=True)) * scale


# --- optional reference packages ------------------------------------------------------------------
def optional(module: str):
    """Import ``module`` or return None (a comparison whose package is missing is skipped)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def k_diffusion_sampling():
    """k-diffusion's ``sampling`` module without its package ``__init__``.

    k-diffusion 0.1.1 pins a training stack (wandb, clip, kornia, accelerate, numpy<2) that the
    samplers never touch, so it is installed with ``--no-deps`` and only ``k_diffusion.sampling``
    (and the ``utils`` it imports) is loaded, from the installed package's own files.
    """
    if "k_diffusion.sampling" in sys.modules:
        return sys.modules["k_diffusion.sampling"]
    try:
        spec = importlib.util.find_spec("k_diffusion")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    if "k_diffusion" not in sys.modules:
        pkg = types.ModuleType("k_diffusion")
        pkg.__path__ = list(spec.submodule_search_locations)
        sys.modules["k_diffusion"] = pkg
    try:
        return importlib.import_module("k_diffusion.sampling")
    except ImportError:
        return None


def version(module: str) -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as _version

    try:
        return _version(module)
    except PackageNotFoundError:
        return "missing"


# --- results --------------------------------------------------------------------------------------
@dataclass
class Check:
    """One target: ``ratio`` (ours / theirs, lower is better) against ``target``."""

    name: str
    ratio: float
    target: float
    note: str = ""
    agree: bool = True  # the answers agree (a fast wrong answer does not meet a target)
    if_missed: str = ""  # the known cause, printed when the target is missed
    noise: float = 0.0  # |A/A ratio - 1| of the same race (ours timed against itself), when measured

    @property
    def ok(self) -> bool:
        return self.ratio <= self.target and self.agree

    @property
    def status(self) -> str:
        if self.ok:
            return "met"
        if self.agree and self.ratio <= self.target + self.noise:
            return "within noise"
        return "MISSED"


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [f"### {self.title}", "", "| " + " | ".join(self.columns) + " |",
                 "|" + "|".join("---" for _ in self.columns) + "|"]
        lines += ["| " + " | ".join(fmt(v).replace("|", "\\|") for v in row) + " |" for row in self.rows]
        lines += [""] + [f"- {n}" for n in self.notes] + ([""] if self.notes else [])
        return "\n".join(lines)


@dataclass
class Report:
    name: str
    tables: list[Table] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    preformatted: str = ""  # markdown kept verbatim ahead of the tables

    def text(self) -> str:
        parts = ([self.preformatted] if self.preformatted else []) + [t.markdown() for t in self.tables]
        if self.checks:
            parts.append(checks_table(self.checks).markdown())
        return "\n".join(parts)


def checks_table(checks: list[Check], title: str = "Targets") -> Table:
    rows = [[c.name, c.ratio, f"<= {c.target:g}", f"{c.noise:.3f}" if c.noise else "-", c.status,
             "; ".join(n for n in (c.note, f"why: {c.if_missed}" if c.if_missed and not c.ok else "") if n)]
            for c in checks]
    return Table(title, ["comparison", "ratio", "target", "noise (A/A)", "status", "note"], rows,
                 notes=["status 'within noise': above the target by less than the noise floor measured in "
                        "the same race (ours timed against itself)"])


def fmt(v) -> str:
    if isinstance(v, float):
        if v == 0 or math.isnan(v) or math.isinf(v):
            return str(v)
        a = abs(v)
        if a >= 1000:
            return f"{v:.0f}"
        if 0.1 <= a < 10:
            return f"{v:.3f}"
        if a >= 0.01:
            return f"{v:.3g}" if a < 100 else f"{v:.1f}"
        return f"{v:.2e}"
    return str(v)


def cli_main(run: Callable[..., Report], doc: str) -> None:
    """The shared command line of every benchmark script: ``--quick`` (tiny settings), ``--threads``."""
    import argparse

    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny settings (smoke test)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(run(quick=args.quick).text())


def same_samples_race(name: str, title: str, pairs: Callable, why: str, note: str,
                      quick: bool = False) -> Report:
    """Ours against reference samplers on the default U-Net, per SDE (VE, VP): the same samples
    (max |ours - theirs| in float32 and, network and samplers in float64, on 4 samples) and the
    wall-time ratio from one race with an A/A column. ``pairs(sde, score, x_T, steps, kd,
    have_diffusers)`` yields (name, reference, ours(), theirs(), nfe); ``title`` is formatted with
    ``batch`` and ``steps``."""
    import copy

    from scoresde import VESDE, VPSDE, get_score_fn

    batch, steps, repeats = (4, 4, 1) if quick else (128, 10, 7)
    report = Report(name)
    table = Table(title.format(batch=batch, steps=steps),
                  ["SDE", "ours", "reference", "NFE", "max abs diff float32", "float64", "ours s",
                   "ref s", "ratio ours / ref", "A/A (ours / ours)"])
    kd = k_diffusion_sampling() is not None
    have_diffusers = optional("diffusers") is not None
    with torch.inference_mode():
        for sde in (VESDE(sigma_max=8.0), VPSDE()):
            net = default_unet(sde.name, channels=16)
            x_T = sde.prior_sampling((batch, 1, 8, 8), torch.Generator().manual_seed(0))
            x_T64 = sde.prior_sampling((4, 1, 8, 8), torch.Generator().manual_seed(1), dtype=torch.float64)
            score64 = get_score_fn(sde, copy.deepcopy(net).double())
            exact = [(ours() - theirs()).abs().max().item()
                     for *_, ours, theirs, _ in pairs(sde, score64, x_T64, steps, kd, have_diffusers)]
            found = pairs(sde, get_score_fn(sde, net), x_T, steps, kd, have_diffusers)
            for (label, ref, ours, theirs, nfe), diff64 in zip(found, exact, strict=True):
                rounds, keep = {}, {}
                best = race({"ours": ours, "theirs": theirs, "again": ours}, repeats=repeats,
                            keep=keep, rounds=rounds)
                diff = (keep["ours"] - keep["theirs"]).abs().max().item()
                ratio = paired_ratio(rounds, "ours", "theirs")
                aa = paired_ratio(rounds, "ours", "again")  # the noise floor of this race
                table.rows.append([sde.name, label, ref, nfe, f"{diff:.1e}", f"{diff64:.1e}",
                                   f"{best['ours']:.3f}", f"{best['theirs']:.3f}", f"{ratio:.3f}",
                                   f"{aa:.3f}"])
                agree = diff64 < (1e-3 if "diffusers" in ref else 1e-8)
                report.checks.append(Check(f"{label} vs {ref} ({sde.name})", ratio, 1.0,
                                           f"max diff {diff:.1e} (float64 {diff64:.1e})", agree=agree,
                                           if_missed=why, noise=abs(aa - 1)))
    if not kd:
        table.notes.append("k-diffusion not installed (make bench): its rows are skipped")
    if not have_diffusers:
        table.notes.append("diffusers not installed (make bench): its row is skipped")
    table.notes.append(note)
    report.tables.append(table)
    return report

