"""argparse `type=` functions shared by every command's flags.

A bad number or name is refused while the command line is parsed, before a file is read or Ray
starts; argparse prefixes the message with the flag (`argument --reduction-factor: ...`) and exits
with status 2. Range checks that need other settings stay in preflight (and `Settings` built in
Python go through those); these catch what no later check can: nan and inf (every comparison with
nan is False, so `nan <= 1` lets it through), and names that are paths.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable

from rundir.paths import name_problem


def _parse(text: str, cast: type) -> float:
    try:
        value = cast(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if cast is int else 'a number'}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number; pass a number such as 2")
    return value


def finite_float(text: str) -> float:
    """A float that is not nan, inf or -inf."""
    return _parse(text, float)


def at_least(low: float, *, cast: type = int) -> Callable[[str], float]:
    """A finite `cast` number >= `low`."""
    def parse(text: str) -> float:
        value = _parse(text, cast)
        if value < low:
            raise argparse.ArgumentTypeError(f"{text} is below {low:g}; pass a number >= {low:g}")
        return value
    parse.__name__ = f"number >= {low:g}"
    return parse


def above(low: float) -> Callable[[str], float]:
    """A finite float > `low`."""
    def parse(text: str) -> float:
        value = _parse(text, float)
        if value <= low:
            raise argparse.ArgumentTypeError(f"{text} must be > {low:g}")
        return value
    parse.__name__ = f"number > {low:g}"
    return parse


def plain_name(text: str) -> str:
    problem = name_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(f"{problem}; pass a plain name such as my-search (the run goes to "
                                         "<storage-path>/<name>; choose the directory with --storage-path)")
    return text


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|min|m|s)")
_UNIT_SECONDS = {"h": 3600, "m": 60, "min": 60, "s": 1}


def duration(text: str) -> float:
    """Wall time with units, in seconds: `2h`, `90m`, `45min`, `1h30m`, `600s`."""
    compact = text.replace(" ", "").lower()
    parts = _DURATION.findall(compact)
    if not parts or "".join(n + u for n, u in parts) != compact:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration; write it with units, e.g. 2h, 90m, "
                                         "1h30m or 600s")
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    if not 0 < seconds < 366 * 24 * 3600:
        raise argparse.ArgumentTypeError(f"{text} is not a duration between a second and a year")
    return seconds


def top_count(text: str) -> int | str:
    """`confirm --top`: a count >= 0 (0: the linear member alone), or `auto`."""
    if text == "auto":
        return text
    return at_least(0)(text)
