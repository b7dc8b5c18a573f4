"""Search-space files (YAML) and the code that turns one into an Optuna define-by-run space."""

from spaces.space import DEFAULT_SPACE, SearchSpace, SpaceError, load_space, parse_space

__all__ = ["DEFAULT_SPACE", "SearchSpace", "SpaceError", "load_space", "parse_space"]
