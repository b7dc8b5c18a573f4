"""What every sub-command's parser shares: the help formatter, how a command is added, exit codes."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

EXIT_UNFINISHED = 1  # a search or stage stopped before its budget was done
EXIT_USAGE = 2  # bad input: one `error: ...` line
EXIT_ALL_FAILED = 3  # a search whose every trial ended as an error: nothing to rank


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends `(default: X)` to a flag's help unless the help already names its default or there is
    no value to show (None, False, [])."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if "default" in (action.help or "") or action.default is None or action.default is False \
                or action.default == []:
            return action.help
        return super()._get_help_string(action)


def add_command(sub: argparse._SubParsersAction, name: str, func: Callable[[argparse.Namespace, list[str]], None],
             **kwargs: Any) -> argparse.ArgumentParser:
    """Add sub-command `name`; `main` runs it as `args.func(args, argv)` (the raw argv is for the
    commands that store their command line: launch, resume)."""
    parser = sub.add_parser(name, formatter_class=HelpFormatter, **kwargs)
    parser.set_defaults(func=func)
    return parser


def add_verbose(p: argparse.ArgumentParser) -> None:
    p.add_argument("--verbose", action="store_true",
                   help="also show Ray's own lines (banners, warnings) on the terminal; by default they go to "
                   "RUN_DIR/ray.log")


def apply_verbose(args: argparse.Namespace) -> None:
    """`--verbose`: read by search/session.py when Ray starts (the variable reaches Ray's processes too)."""
    if getattr(args, "verbose", False):
        os.environ["SEARCH_VERBOSE"] = "1"
