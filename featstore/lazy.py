"""Lazy exports for package `__init__` files: a name loads its module on first use."""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_exports(package: str, table: dict[str, str]) -> tuple[Callable, Callable, list[str]]:
    """Return `(__getattr__, __dir__, __all__)` for `package`, exporting each name of `table`
    from the module it maps to (relative to `package`, e.g. `"registry"` or `".registry"`)."""

    def __getattr__(name: str):
        if name in table:
            module = table[name]
            target = importlib.import_module(
                module if module.startswith("featstore") else f"{package}.{module}"
            )
            return getattr(target, name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(table)

    return __getattr__, __dir__, sorted(table)
