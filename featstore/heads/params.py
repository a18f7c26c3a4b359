"""`HeadParams`, the base of every head kind's parameters (a frozen dataclass per kind, as a
scikit-learn estimator owns its `__init__` arguments; CLI flags and grid keys are its fields),
and `SweepOptions`, what a sweep fits. Pure Python: the CLI reads their defaults at start-up."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar

from featstore.errors import InvalidOptionError
from featstore.options import Options, check_choice, check_whole

#: How features are scaled before a head: standardised, L2-normalised rows, or left alone.
SCALINGS = ("standard", "l2", "none")
#: Class weights a head may take: `balanced` weighs each class by n_rows / (n_classes x its rows).
CLASS_WEIGHTS = ("balanced",)
#: How heads are chosen: on the validation part, by cross-validation on training and validation,
#: or auto: by cross-validation when the validation part has fewer than `AUTO_CV_BELOW` images.
SELECTIONS = ("auto", "val", "cv")
#: Below this many validation images `auto` chooses by cross-validation: the standard error of
#: an accuracy near 90 % measured on n images is 30/sqrt(n) points, 1 point at n = 900, more than
#: the gap between the best settings of a sweep on flowers (bench/bench_select.py); above it the
#: folds cost up to 10 fits per setting for a difference the validation part already resolves.
AUTO_CV_BELOW = 1000
#: Calibration maps a saved head's probabilities may go through (see `heads.calibration`).
CALIBRATIONS = ("sigmoid", "isotonic", "temperature")


@dataclass(frozen=True)
class HeadParams(Options):
    """Base of each kind's parameters: `kind` (a class attribute, the kind's name) and
    `random_state`, the seed of the head."""

    kind: ClassVar[str] = ""
    random_state: int = 0

    @classmethod
    def names(cls) -> list[str]:
        """The parameters a grid or a flag may set: every field but `random_state`."""
        return [f.name for f in fields(cls) if f.name != "random_state"]

    def to_dict(self) -> dict:
        """Return `{"kind": ..., <each field>, "random_state": ...}`, JSON-ready (lists for tuples)."""
        data = {name: getattr(self, name) for name in self.names()}
        data = {"kind": self.kind, **data, "random_state": self.random_state}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}

    @classmethod
    def from_dict(cls, data: dict) -> HeadParams:
        """Rebuild from `to_dict` output (or any dict: unknown keys, `kind` included, are ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class SelectOptions(Options):
    """How settings are chosen: `select` val (on the validation part), cv (`cv_folds`-fold
    stratified cross-validation, `cv_repeats` times, on the training and validation parts; the
    chosen settings then refitted on both) or auto (cv when the validation part has fewer than
    `AUTO_CV_BELOW` images, else val); and `calibrate` (sigmoid, isotonic, temperature or None):
    the saved heads' probabilities mapped by a calibration fitted on the same held-out
    predictions (validation, or out of fold)."""

    select: str = "auto"
    cv_folds: int = 5
    cv_repeats: int = 2
    calibrate: str | None = None

    def check(self) -> SelectOptions:
        """Raise InvalidOptionError for an unknown selection or calibration, fewer than 2 folds or
        fewer than 1 repeat."""
        check_choice("select", self.select, SELECTIONS)
        check_choice("calibrate", self.calibrate, CALIBRATIONS, allow_none=True)
        check_whole("cv_folds", self.cv_folds, 2)
        check_whole("cv_repeats", self.cv_repeats, 1)
        return self

    def resolve(self, n_val: int) -> str:
        """`cv` or `val`: the selection to use for a validation part of `n_val` images."""
        if self.select == "auto":
            return "cv" if n_val < AUTO_CV_BELOW else "val"
        return self.select

    def why(self, n_val: int) -> str:
        """One line saying how `resolve(n_val)` chose, for the output."""
        how = self.resolve(n_val)
        if self.select != "auto":
            return f"--select {how}"
        sign = "<" if how == "cv" else ">="
        return f"--select auto chose {how}: the validation part has {n_val} images ({sign} {AUTO_CV_BELOW})"


@dataclass(frozen=True)
class SweepOptions(SelectOptions):
    """What a sweep fits: `grid` (a grid file, JSON or YAML, or a grid as a dict; None: the
    default grid, see `featstore.heads.grid`), `ensemble` (K: also save the greedy ensemble of K
    picks with replacement among the settings, chosen over the best single setting only beyond
    noise, as a head of kind `ensemble`; 0: none), and how the settings are chosen (see
    `SelectOptions`)."""

    grid: str | dict | None = None
    ensemble: int = 0

    def check(self) -> SweepOptions:
        """Raise InvalidOptionError for an ensemble of 1 or a negative or fractional size, and for
        bad selection options."""
        super().check()
        if not isinstance(self.ensemble, int) or isinstance(self.ensemble, bool) or self.ensemble < 0:
            raise InvalidOptionError("ensemble", f"must be a whole number of picks, not {self.ensemble!r}")
        if self.ensemble == 1:
            raise InvalidOptionError("ensemble", "an ensemble needs at least 2 picks (0: no ensemble)")
        return self


def check_scale(scale: str) -> str:
    """Return `scale` if it is one of `SCALINGS`, else raise InvalidOptionError."""
    return check_choice("scale", scale, SCALINGS)


def check_class_weight(class_weight: str | None) -> str | None:
    """Return `class_weight` if it is None or one of `CLASS_WEIGHTS`, else raise InvalidOptionError."""
    return check_choice("class_weight", class_weight, CLASS_WEIGHTS, allow_none=True)


def make_scaler(scale: str):
    """Return the unfitted scikit-learn step of scaling `scale` (or "passthrough" for none)."""
    from sklearn.preprocessing import Normalizer, StandardScaler

    if scale == "standard":
        return StandardScaler()
    return Normalizer(norm="l2") if scale == "l2" else "passthrough"


def parse_floats(text: str, param: str = "C") -> tuple[float, ...]:
    """Parse "0.01,0.1,1" into floats; InvalidOptionError naming `param` otherwise or when empty."""
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
    """Parse "512,128" into ints; InvalidOptionError naming `param` otherwise."""
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError as err:
        raise InvalidOptionError(
            param, f"must be a comma-separated list of integers, like 512,128; got {text!r}"
        ) from err
