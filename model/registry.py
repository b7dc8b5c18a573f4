"""Name -> class registries (losses, poolers, encoders, ...).

Adding a component is one decorated class: `@LOSSES.register("dice") class DiceLoss(...)`.
Lookups of unknown names fail with the list of valid names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from model.errors import ConfigError

T = TypeVar("T")


class Registry(dict[str, type]):
    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        def add(cls: type[T]) -> type[T]:
            if name in self:
                raise ValueError(f"{self.kind} {name!r} is registered twice ({self[name]} and {cls})")
            self[name] = cls
            return cls

        return add

    def get_class(self, name: str, *, field: str | None = None) -> type:
        if name not in self:
            where = f"`{field}` is {name!r}, but" if field else f"unknown {self.kind} {name!r}:"
            raise ConfigError(f"{where} valid {self.kind} names are: {', '.join(sorted(self))}")
        return self[name]
