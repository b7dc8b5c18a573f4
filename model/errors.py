"""Errors users can act on. Each message names the offending field, file or row and how to fix it.

The command line prints any `UserError` as one `error: ...` line and exits with status 2.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


class UserError(Exception):
    """An error the user can fix (bad input, a damaged file): no traceback, exit status 2."""


class ConfigError(UserError, ValueError):
    """A trial configuration, a search space, a flag or a run file is invalid."""


class DataError(UserError, ValueError):
    """An input data file is missing or malformed."""


class DamagedFile(ConfigError):
    """A file the project wrote and reads back is damaged or foreign (cut short, not its format, a
    key missing): names the file, what is wrong and, when the reader knows it, the command that
    writes it again. rundir/io.py `damaged` fills in the recovery of a run's files."""

    def __init__(self, path, problem: str, recovery: str | None = None):
        self.path, self.problem, self.recovery = path, problem, recovery
        super().__init__(f"{path} is damaged ({problem}); nothing was changed"
                         + (f". To recover: {recovery}" if recovery else ""))


def read_json_file(path: Path, *, expect: type | None = None,
                   damaged: Callable[[Path, str], DamagedFile] = DamagedFile) -> Any:
    """The JSON value in `path`; a file that cannot be read, is not JSON, or (`expect`: dict or
    list) holds another kind of value raises `damaged(path, problem)` (which adds the reader's way
    to write the file again)."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise damaged(path, err.strerror or str(err)) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise damaged(path, f"not valid JSON: {err}") from None
    if expect is not None and not isinstance(value, expect):
        kinds = {dict: "an object", list: "a list"}
        raise damaged(path, f"a JSON {type(value).__name__} where {kinds.get(expect, expect.__name__)} belongs")
    return value
