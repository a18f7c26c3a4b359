"""Named entries (head kinds, backbone sources, runtimes), the built-in ones loaded on first use
and listed in the order of their modules."""

from __future__ import annotations

import importlib
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries by name; `builtins` are the modules of the built-in entries, in listing order."""

    def __init__(self, builtins: tuple[str, ...]):
        self.builtins = builtins
        self._entries: dict[str, T] = {}
        self._rank: dict[str, int] = {}
        self._loading = False

    def load(self) -> None:
        """Import the built-in modules (once; they register themselves)."""
        if self._loading:
            return
        self._loading = True
        try:
            for module in self.builtins:
                importlib.import_module(module)
        except BaseException:
            self._loading = False
            raise

    def add(self, name: str, entry: T, module: str) -> T:
        """Register `entry` as `name`, defined in `module` (which places a built-in in the list)."""
        self._entries[name] = entry
        self._rank[name] = self.builtins.index(module) if module in self.builtins else len(self.builtins)
        return entry

    def remove(self, name: str) -> None:
        """Forget `name` (nothing happens when it is not there)."""
        self._entries.pop(name, None)

    def __contains__(self, name: str) -> bool:
        self.load()
        return name in self._entries

    def get(self, name: str) -> T | None:
        """The entry `name`, or None."""
        self.load()
        return self._entries.get(name)

    def names(self) -> list[str]:
        """The names: built-ins in their modules' order, then the others in registration order."""
        self.load()
        return sorted(self._entries, key=lambda n: self._rank[n])

    def values(self) -> list[T]:
        """The entries, in `names()` order."""
        return [self._entries[n] for n in self.names()]
