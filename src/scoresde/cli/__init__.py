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
import os
import sys
from collections.abc import Sequence

from scoresde.stages.config import ConfigError

from .common import check_paths
from .controllable import add_controllable_parsers
from .pipeline import add_stage_parsers

EXIT_INPUT_ERROR = 2
EXIT_PREEMPTED = 128 + 15  # SIGTERM, as a shell reports a process it terminated


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


def _known_errors() -> tuple[type[BaseException], ...]:
    from scoresde.checkpoint import CheckpointError
    from scoresde.data import DataError

    return ConfigError, DataError, CheckpointError, ValueError, FloatingPointError, OSError


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run one stage; returns the exit code (0 ok, 2 bad input, 130 interrupted, 143 stopped
    by SIGTERM after saving a resumable state)."""
    from scoresde.stages.common import Preempted

    args = build_parser().parse_args(argv)
    try:
        check_paths(args)
        args.func(args)
    except Preempted as stop:
        print(f"stopped: {_one_line(stop)}", file=sys.stderr)
        return EXIT_PREEMPTED
    except _known_errors() as err:
        if os.environ.get("SCORESDE_TRACEBACK"):
            raise
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
