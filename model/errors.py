"""Errors users can act on. Each message names the offending field, file or row and how to fix it.

The command line prints any `UserError` as one `error: ...` line and exits with status 2.
"""


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
