"""Argument helpers every stage's command shares: parameters, paths, SDE, device, threads."""

from __future__ import annotations

import argparse
from pathlib import Path

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
    """A path argument; its role (``output`` when the help starts so, else ``input``) is recorded
    for :func:`check_paths`."""
    action = p.add_argument(flag, required=required, nargs=nargs, metavar="PATH", help=help)
    if "paths" not in vars(p).get("_defaults", {}):
        p.set_defaults(paths=[])
    role = "output-dir" if help.startswith("output dir") else \
        "output" if help.startswith("output") else "input"
    p.get_default("paths").append((flag, action.dest, role))


def check_paths(args) -> None:
    """Before any work: no output path given twice (as resolved paths, so ``s.pt`` and ``./s.pt``
    are one file), none equal to an input (which the stage would overwrite), and each one
    writable: a file output is not an existing directory, an output directory not an existing
    file, and no parent of either is a file."""
    from scoresde.stages.common import StageError

    def given(dest):
        value = getattr(args, dest, None)
        return [] if value is None else [value] if isinstance(value, str) else list(value)

    seen: dict[str, str] = {}
    inputs: dict[str, str] = {}
    for flag, dest, role in getattr(args, "paths", []):
        for path in given(dest):
            key = str(Path(path).resolve())
            if role == "input":
                inputs.setdefault(key, flag)
                continue
            if key in seen:
                raise StageError(f"the outputs {seen[key]} and {flag} {path} name one file twice; "
                                 "give each output its own path")
            seen[key] = f"{flag} {path}"
            check_writable(flag, path, directory=role == "output-dir")
    for key, named in seen.items():
        if key in inputs:
            raise StageError(f"output {named} is also an input ({inputs[key]} {key}); writing it "
                             "would replace the input; write outputs elsewhere")


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


def check_writable(flag: str, path: str, directory: bool = False) -> None:
    """StageError naming the path when it cannot be written: a file output that is an existing
    directory, an output directory that is an existing file, a parent that is a file, or a
    nearest existing folder without write permission."""
    import os

    from scoresde.stages.common import StageError

    target = Path(path)
    if directory and target.exists() and not target.is_dir():
        raise StageError(f"{flag} {path} is an existing file, not a directory; give a directory path")
    if not directory and target.is_dir():
        raise StageError(f"{flag} {path} is an existing directory; give a file path")
    parent = target.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise StageError(f"{flag} {path} cannot be written: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise StageError(f"{flag} {path} cannot be written: no write permission in {parent}")
