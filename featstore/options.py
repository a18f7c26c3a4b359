"""Options as objects: frozen dataclasses built once (by the CLI from its flags, or by the Python
API from keyword arguments) and passed whole; each holds its defaults, the one place they live.

Each package declares its own (`DecodeOptions` in `data`, `BackboneOptions` in `backbones`,
...) by subclassing `Options`. This module imports `errors` only.
"""

from __future__ import annotations

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


def build_options(kwargs: dict[str, Any], *classes: type[Options]) -> list[Options]:
    """Split flat keyword arguments into one checked object per class of `classes`.

    `build_options({"batch_size": 64, "resize": "crop"}, RuntimeOptions, DecodeOptions)` gives
    `[RuntimeOptions(batch_size=64), DecodeOptions(resize="crop")]`. A field name belongs to
    the first class that declares it.

    Raises
    ------
    InvalidOptionError
        A keyword no class declares (the message lists the valid ones), or a bad value.
    """
    owner: dict[str, type[Options]] = {}
    for cls in classes:
        for f in fields(cls):
            owner.setdefault(f.name, cls)
    unknown = sorted(set(kwargs) - set(owner))
    if unknown:
        raise InvalidOptionError(unknown[0], f"unknown option; valid ones: {', '.join(sorted(owner))}")
    parts: dict[type[Options], dict] = {cls: {} for cls in classes}
    for key, value in kwargs.items():
        parts[owner[key]][key] = value
    return [cls(**parts[cls]).check() for cls in classes]


def merge_options(given: dict[type[Options], Options | None], keywords: dict[str, Any]) -> list[Options]:
    """The checked options objects of a call that takes objects and flat keywords alike.

    `given` maps each class the call takes to the object passed (None: not passed); each flat
    keyword sets the field of that name in the first class declaring it, whose object is then
    built from the keywords and its defaults. One rule for every command: a keyword may not
    set a field of an object that was also passed (say it in the object instead).

    Raises
    ------
    InvalidOptionError
        A keyword no class declares (the message lists the valid ones), a keyword for an object
        also passed, or a bad value.
    """
    owner: dict[str, type[Options]] = {}
    for cls in given:
        for f in fields(cls):
            owner.setdefault(f.name, cls)
    for key in sorted(keywords):
        cls = owner.get(key)
        if cls is None:
            raise InvalidOptionError(key, f"unknown option; valid ones: {', '.join(sorted(owner))}")
        if given[cls] is not None:
            raise InvalidOptionError(key, f"given both as a keyword and in the {cls.__name__} object")
    fresh = iter(build_options(keywords, *[cls for cls, obj in given.items() if obj is None]))
    return [obj.check() if obj is not None else next(fresh) for obj in given.values()]
