"""``python -m scoresde <stage> ...``: see :mod:`scoresde.cli`."""

import sys

from scoresde.cli import main

sys.exit(main())
