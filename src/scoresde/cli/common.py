"""Argument helpers every stage's command shares: parameters, paths, SDE, device, threads."""

from __future__ import annotations

import argparse

from scoresde.stages.config import SDE_NAMES, resolve


def add_common(p: argparse.ArgumentParser, device: bool = True) -> None:
    g = p.add_argument_group("parameters")
    g.add_argument("--params", metavar="FILE", help="parameter file (YAML), e.g. params.yaml")
    g.add_argument("--params-json", metavar="JSON", help="parameters as a JSON object "
                   "(merged over --params; the Snakemake rules pass this)")
    g.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="sets",
                   help="override one parameter, e.g. --set train.n_iters=100 (repeatable)")
    g.add_argument("--threads", type=int, metavar="N",
                   help="torch threads (default: the stage's resources.threads)")
    if device:
        g.add_argument("--device", metavar="auto|cpu|cuda",
                       help="compute device (default: the stage's device parameter)")


def add_path(p, flag: str, help: str, nargs=None, required: bool = True) -> None:
    p.add_argument(flag, required=required, nargs=nargs, metavar="PATH", help=help)


def add_sde(p, required: bool) -> None:
    p.add_argument("--sde", required=required, metavar="|".join(SDE_NAMES),
                   help="the SDE" + ("" if required else " the checkpoint must belong to"))


def add_seed_index(p) -> None:
    p.add_argument("--seed-index", type=int, default=0, metavar="K",
                   help="draw seed K of report.seeds: samples K*n .. K*n+n-1 of the "
                        "sample.seed streams (n = sample.n_samples; default 0)")


def params_of(args) -> dict:
    return resolve(args.params, args.params_json, args.sets)


def check_sde(name: str | None) -> str | None:
    if name is not None and name not in SDE_NAMES:
        raise ValueError(f"unknown SDE {name!r}; choose one of {', '.join(SDE_NAMES)}")
    return name


def runtime(args, params: dict, group: str) -> dict:
    """device and threads: the command line's, else the parameter group's."""
    section = params[group]
    threads = args.threads if args.threads is not None else section["resources"]["threads"]
    device = getattr(args, "device", None) or section.get("device", "auto")
    return {"device_name": device, "threads": threads}
