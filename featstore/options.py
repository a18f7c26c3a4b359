"""Options as objects: frozen dataclasses that hold their defaults and check their values,
raising `InvalidOptionError` named by the field."""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar

from featstore.errors import InvalidOptionError

T = TypeVar("T", bound="Options")


class Record:
    """Base of result and options dataclasses: `to_dict()`, their fields as a JSON-ready dict."""

    def to_dict(self) -> dict:
        """Return a JSON-ready dict (what goes into HDF5 attrs, meta.json and model cards)."""
        return asdict(self)


@dataclass(frozen=True)
class Options(Record):
    """Base of every options object: `to_dict`/`from_dict`, and `check()` (subclasses validate
    their values there and raise `InvalidOptionError` naming the field)."""

    @classmethod
    def from_dict(cls: type[T], data: dict) -> T:
        """Rebuild from `to_dict` output; keys this class does not know are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def check(self: T) -> T:
        """Validate the values; return self. The base accepts everything."""
        return self


def check_choice(param: str, value: Any, choices: tuple, allow_none: bool = False) -> Any:
    """Return `value` when it is one of `choices` (or None with `allow_none`), else raise
    InvalidOptionError `<param>: must be one of a, b, c, not 'x'`."""
    if (value is None and allow_none) or value in choices:
        return value
    raise InvalidOptionError(param, f"must be one of {', '.join(map(str, choices))}, not {value!r}")


def check_whole(param: str, value: Any, low: int) -> Any:
    """Return `value` when it is a whole number (not a bool) of at least `low`, else raise
    InvalidOptionError."""
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
    """What every computing command takes: the store, whether to measure energy and CO2
    (codecarbon, offline), and the country (ISO 3166 alpha-3; `$FEATSTORE_COUNTRY`, else USA)."""

    store: str | None = None
    emissions: bool = True
    country: str | None = None
