"""Name -> object registries: configs name things, registries turn the names into code."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from .errors import CifarnetError

T = TypeVar("T")


class UnknownNameError(CifarnetError, KeyError):
    """A name that a registry does not hold; the message lists the names it does hold."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class Registry:
    """A named mapping from strings to classes or functions.

    >>> OPTIMIZERS = Registry("optimizer")
    >>> @OPTIMIZERS.register("sgd")
    ... class SGD: ...
    >>> OPTIMIZERS.get("sgd") is SGD
    True
    """

    def __init__(self, name: str):
        self.name = name
        self._entries: dict[str, Any] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering its target under ``name``; a name may be used once."""

        def add(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.name} {name!r} is already registered")
            self._entries[name] = obj
            return obj

        return add

    def get(self, name: str) -> Any:
        """The entry registered as ``name``; unknown names raise :class:`UnknownNameError`."""
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "(none)"
            raise UnknownNameError(f"unknown {self.name} {name!r}; known: {known}") from None

    @contextmanager
    def replaced(self, name: str, obj: Any) -> Iterator[Any]:
        """Within the block, ``name`` stands for ``obj`` (registered or replaced); afterwards it is
        as before. For tests and experiments that swap one entry for a while."""
        missing = object()
        before = self._entries.get(name, missing)
        self._entries[name] = obj
        try:
            yield obj
        finally:
            if before is missing:
                del self._entries[name]
            else:
                self._entries[name] = before

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.name!r}, {self.names()})"
