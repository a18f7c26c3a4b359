"""Options as objects: frozen dataclasses, built once and passed whole.

Every library function takes its options as these objects; each class holds its defaults (the
one place they live) and checks its values in `check()`, raising `InvalidOptionError` named by
the field. Only `featstore.Store` turns keyword arguments into them.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar

from featstore.errors import InvalidOptionError

T = TypeVar("T", bound="Options")


@dataclass(frozen=True)
class Options:
    """Base of every options object: `to_dict`/`from_dict`, and `check()` (subclasses validate
    their values there and raise `InvalidOptionError` naming the field)."""

    def to_dict(self) -> dict:
        """Return a JSON-ready dict (what goes into HDF5 attrs, meta.json and model cards)."""
        return asdict(self)

    @classmethod
    def from_dict(cls: type[T], data: dict) -> T:
        """Rebuild from `to_dict` output; keys this class does not know are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def check(self: T) -> T:
        """Validate the values; return self. The base accepts everything."""
        return self


def check_choice(param: str, value: Any, choices: tuple, allow_none: bool = False) -> Any:
    """Return `value` when it is one of `choices` (or None with `allow_none`).

    Raises
    ------
    InvalidOptionError
        Anything else: `<param>: must be one of a, b, c, not 'x'`.
    """
    if (value is None and allow_none) or value in choices:
        return value
    raise InvalidOptionError(param, f"must be one of {', '.join(map(str, choices))}, not {value!r}")


def check_whole(param: str, value: Any, low: int) -> Any:
    """Return `value` when it is a whole number (not a bool) of at least `low`.

    Raises
    ------
    InvalidOptionError
        Anything else: `<param>: must be a whole number of at least <low>, not <value>`.
    """
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= low:
        return value
    raise InvalidOptionError(param, f"must be a whole number of at least {low}, not {value!r}")


def is_positive(value: Any) -> bool:
    """True for a finite real number above 0 (not a bool)."""
    return (
        isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    )


@dataclass(frozen=True)
class JobOptions(Options):
    """Options every computing command takes: where the store is, whether to measure energy and
    CO2 (codecarbon, offline) and for which country (ISO 3166 alpha-3; default
    `$FEATSTORE_COUNTRY`, else USA)."""

    store: str | None = None
    emissions: bool = True
    country: str | None = None
