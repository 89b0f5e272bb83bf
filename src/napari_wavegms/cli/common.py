"""What the three commands share: one exit-status convention and argument parsing that returns it.

Exit status: 0 success, 1 when some inputs failed, 2 for a usage error (argparse's convention), 130 when
the user pressed Ctrl-C.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

OK, SOME_FAILED, USAGE, CANCELLED = 0, 1, 2, 130


def parse(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    check: Callable[[argparse.ArgumentParser, argparse.Namespace], None] | None = None,
) -> argparse.Namespace | int:
    """The parsed arguments, or the exit status when parsing stops (2 for a usage error, 0 for
    ``--help``): argparse exits, and a command called from Python (tests, scripts) must return instead.
    ``check`` adds what argparse cannot check alone, reporting through ``parser.error``."""
    try:
        args = parser.parse_args(argv)
        if check is not None:
            check(parser, args)
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else USAGE
    return args
