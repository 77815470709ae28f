"""One small registry for every name-to-thing table (strategies, tasks, zoo)."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import Generic, TypeVar

from .errors import SftuneError, did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects; a miss lists what exists instead of a KeyError."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise SftuneError(
                f"unknown {self.kind} '{name}'{did_you_mean(name, self.list())}; "
                f"available: {', '.join(self.list())}"
            ) from None

    def list(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._items if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._items
