"""Exit codes of a stage and the one place that turns its errors into them.

A leaf module (no torch at import): the command line (:func:`scoresde.cli.main`) and the
training workers started by :mod:`scoresde.stages.train.launch` both run a stage through
:func:`exit_code`, so a worker's error line and code are the command's.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

EXIT_INPUT_ERROR = 2
EXIT_PREEMPTED = 128 + 15  # SIGTERM, as a shell reports a process it terminated
EXIT_INTERRUPTED = 130


def known_errors() -> tuple[type[BaseException], ...]:
    """The errors a user can cause: one ``error:`` line, never a traceback."""
    from scoresde.checkpoint import CheckpointError
    from scoresde.data import DataError
    from scoresde.stages.config import ConfigError

    return ConfigError, DataError, CheckpointError, ValueError, FloatingPointError, OSError


def one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def exit_code(run: Callable[[], object]) -> int:
    """Call `run`; 0 when it returns, else one line on stderr and the code: 2 for bad input
    (``error: ...``; ``SCORESDE_TRACEBACK=1`` raises instead), 143 when it stopped on SIGTERM
    after saving a resumable state (``stopped: ...``), 130 when interrupted."""
    from scoresde.stages.common import Preempted

    try:
        run()
    except Preempted as stop:
        print(f"stopped: {one_line(stop)}", file=sys.stderr)
        return EXIT_PREEMPTED
    except known_errors() as err:
        if os.environ.get("SCORESDE_TRACEBACK"):
            raise
        print(f"error: {one_line(err)}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0
