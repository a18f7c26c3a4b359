"""The options of a head, `HeadConfig`: one frozen object holding every head option and its default.

Each head kind (see `featstore.heads.registry`) declares which of these fields it uses; the
kind's own defaults (the scaling, the C values) are filled in by `HeadConfig.for_kind`. Also
parses the comma-separated lists the command line gives (`--C 0.1,1`, `--hidden 512,128`).

Imports `options` and `errors`; `registry` (a sibling, itself light) inside the methods that
look a kind up; scikit-learn inside `make_scaler` only. Light enough for the CLI to read its
defaults at import time.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields, replace

from featstore.errors import InvalidOptionError
from featstore.options import Options, check_choice

#: How features are scaled before a head: standardised, L2-normalised rows, or left alone.
SCALINGS = ("standard", "l2", "none")
#: Kernels of the svm head.
KERNELS = ("rbf", "linear")
#: Class weights a head may take: `balanced` weighs each class by n_rows / (n_classes x its rows).
CLASS_WEIGHTS = ("balanced",)


def _listed(values) -> tuple | None:
    """A list or tuple of values as a tuple (None stays None; one number becomes a 1-tuple)."""
    if values is None:
        return None
    if isinstance(values, numbers.Real):
        return (values,)
    return tuple(values)


@dataclass(frozen=True)
class HeadConfig(Options):
    """Options of a head; each kind uses some of them (its `HeadKind.options`) and ignores the rest.

    `kind` is set by `fit_head` (None: not chosen yet). `scale` None and `C` None mean the
    kind's default (none for knn, standard otherwise; a C grid for logistic, one C for svm).
    `hidden` (units per hidden layer), `dropout`, `epochs`, `learning_rate` and `patience`
    (epochs without validation progress before stopping) are the dense head's; `k` (neighbours)
    is knn's; `kernel` the svm's. `class_weight` (None or `balanced`) weighs the classes of the
    kinds that take weights (svm, logistic, dense; see `HeadKind.class_weights`). `random_state`
    seeds the head.
    """

    kind: str | None = None
    scale: str | None = None
    C: tuple[float, ...] | None = None
    kernel: str = "rbf"
    hidden: tuple[int, ...] = (256,)
    dropout: float = 0.5
    epochs: int = 30
    learning_rate: float = 1e-3
    patience: int = 5
    k: int = 10
    class_weight: str | None = None
    random_state: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "C", _listed(self.C))
        object.__setattr__(self, "hidden", _listed(self.hidden))

    def to_dict(self) -> dict:
        """Return a JSON-ready dict: with a kind, its name, the options it uses and the seed;
        without one, every field. Tuples become lists."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.kind is not None:
            from featstore.heads.registry import get_head_kind

            used = get_head_kind(self.kind).options
            data = {"kind": self.kind, **{k: data[k] for k in used}, "random_state": self.random_state}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}

    def check(self) -> HeadConfig:
        """Raise InvalidOptionError (naming the field) for a value out of range, or HeadError for
        an unknown kind; return self."""
        if self.kind is not None:
            from featstore.heads.registry import get_head_kind

            get_head_kind(self.kind)
        check_choice("scale", self.scale, SCALINGS, allow_none=True)
        check_choice("kernel", self.kernel, KERNELS)
        check_choice("class_weight", self.class_weight, CLASS_WEIGHTS, allow_none=True)
        if self.C is not None and (not self.C or any(not _positive(c) for c in self.C)):
            raise InvalidOptionError("C", f"values must be positive numbers, not {list(self.C)}")
        if any(not isinstance(h, numbers.Integral) or h < 1 for h in self.hidden):
            raise InvalidOptionError(
                "hidden", f"layer sizes must be whole numbers of at least 1, not {list(self.hidden)}"
            )
        if not (isinstance(self.dropout, numbers.Real) and 0 <= self.dropout < 1):
            raise InvalidOptionError("dropout", f"must be in [0, 1), not {self.dropout}")
        for name, low in (("epochs", 1), ("k", 1), ("patience", 0)):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or value < low:
                raise InvalidOptionError(name, f"must be a whole number of at least {low}, not {value!r}")
        if not _positive(self.learning_rate):
            raise InvalidOptionError("learning_rate", f"must be a positive number, not {self.learning_rate}")
        return self

    def for_kind(self, kind: str, keep_C: bool = True) -> HeadConfig:
        """Return a checked copy for head `kind`, the kind's defaults filled in.

        `keep_C` False is for a kind fitted among several (`fit_head all`, sweeps): it drops
        `C` for kinds that do not search a grid of C (a `--C` grid is logistic's) and
        `class_weight` for kinds without class weights (knn).

        Raises
        ------
        HeadError
            Unknown kind.
        InvalidOptionError
            A value out of range, or one the kind refuses (the svm takes one C; class weights
            for a kind without them).
        """
        from featstore.heads.registry import get_head_kind

        spec = get_head_kind(kind)
        config = replace(self, kind=spec.name).check()
        C = config.C if keep_C or spec.c_grid else None
        if C is None and spec.default_C is not None:
            C = tuple(spec.default_C(config))
        weight = config.class_weight
        if weight is not None and not spec.class_weights:
            if keep_C:
                raise InvalidOptionError(
                    "class_weight", f"{spec.name} heads take no class weights; leave it out for {spec.name}"
                )
            weight = None
        config = replace(config, scale=config.scale or spec.default_scale, C=C, class_weight=weight)
        if spec.check is not None:
            spec.check(config)
        return config


def _positive(value) -> bool:
    return isinstance(value, numbers.Real) and math.isfinite(value) and value > 0


def parse_floats(text: str, param: str = "C") -> tuple[float, ...]:
    """Parse "0.01,0.1,1" into floats.

    Raises
    ------
    InvalidOptionError
        An item is not a number, or the list is empty (`param` names the option).
    """
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError as err:
        raise InvalidOptionError(
            param, f"must be a comma-separated list of numbers, like 0.01,0.1,1; got {text!r}"
        ) from err
    if not values:
        raise InvalidOptionError(param, "must list at least one number")
    return values


def parse_ints(text: str, param: str = "hidden") -> tuple[int, ...]:
    """Parse "512,128" into ints.

    Raises
    ------
    InvalidOptionError
        An item is not a whole number (`param` names the option).
    """
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError as err:
        raise InvalidOptionError(
            param, f"must be a comma-separated list of integers, like 512,128; got {text!r}"
        ) from err


def make_scaler(scale: str):
    """Return the unfitted scikit-learn step of scaling `scale` (or "passthrough" for none)."""
    from sklearn.preprocessing import Normalizer, StandardScaler

    if scale == "standard":
        return StandardScaler()
    return Normalizer(norm="l2") if scale == "l2" else "passthrough"
