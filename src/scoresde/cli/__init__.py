"""Command line: ``python -m scoresde <stage> ...`` runs one pipeline stage.

Every stage takes all of its input and output paths as arguments, and its parameters from
``--params FILE`` (e.g. params.yaml), ``--params-json JSON`` (what the Snakemake rules pass)
and ``--set group.key=value`` overrides, merged in that order over the schema defaults and
validated. Problems with the input (a bad parameter, a missing dataset root, a corrupt
checkpoint, an unknown sampler) end with one ``error: ...`` line on stderr and exit code 2;
set ``SCORESDE_TRACEBACK=1`` to see the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from scoresde.stages.exits import EXIT_INPUT_ERROR, EXIT_PREEMPTED, exit_code

from .common import check_paths
from .controllable import add_controllable_parsers
from .pipeline import add_stage_parsers

__all__ = ["EXIT_INPUT_ERROR", "EXIT_PREEMPTED", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m scoresde",
        description="Score-SDE pipeline stages (Song et al., ICLR 2021). Each stage is one "
                    "Snakemake rule; all paths are arguments.",
        epilog="Stage order: prepare-data -> train-features, train -> select-checkpoint -> "
               "sample -> fid; likelihood; report. Run `python -m scoresde STAGE --help`.")
    sub = parser.add_subparsers(dest="stage", metavar="STAGE", required=True)
    add_stage_parsers(sub)
    add_controllable_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one stage; returns the exit code (0 ok, 2 bad input, 130 interrupted, 143 stopped
    by SIGTERM after saving a resumable state)."""
    args = build_parser().parse_args(argv)

    def run() -> None:
        check_paths(args)  # outputs that would overwrite an input, or cannot be written
        args.func(args)

    return exit_code(run)


if __name__ == "__main__":
    sys.exit(main())
