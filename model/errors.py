"""Errors users can act on. Each message names the offending field, file or row and how to fix it."""


class ConfigError(ValueError):
    """A trial configuration or a search space is invalid."""


class DataError(ValueError):
    """An input data file is missing or malformed."""


class RestoreFailed(RuntimeError):
    """A stopped search cannot be continued (Ray could not restore its experiment)."""
