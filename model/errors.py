"""Errors users can act on. Each message names the offending field, file or row and how to fix it.

The command line prints any `UserError` as one `error: ...` line and exits with status 2.
"""


class UserError(Exception):
    """An error the user can fix (bad input, a damaged file): no traceback, exit status 2."""


class ConfigError(UserError, ValueError):
    """A trial configuration, a search space, a flag or a run file is invalid."""


class DataError(UserError, ValueError):
    """An input data file is missing or malformed."""
