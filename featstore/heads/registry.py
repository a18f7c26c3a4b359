"""The head-kind registry: a kind is one `register_head_kind(HeadKind(...))`, and nothing outside
its module branches on its name. Registering costs no scikit-learn import."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from featstore.errors import HeadError, InvalidOptionError
from featstore.heads.params import HeadParams
from featstore.registry import Registry

if TYPE_CHECKING:
    import numpy as np

#: `featstore fit-head all` fits every kind fitted on features; no kind may take this name.
ALL = "all"
#: `featstore fit-head sweep` fits a grid of settings of every kind; no kind may take this name.
SWEEP = "sweep"
#: The names `fit-head` gives its own meaning.
RESERVED = (ALL, SWEEP)


@dataclass(frozen=True)
class FitContext:
    """What a builder may need to know of the training rows: parallel workers, training rows
    (e.g. to cap knn's k) and the fewest rows of one class (e.g. to cap cross-validation folds)."""

    n_jobs: int = 1
    n_train: int | None = None
    min_per_class: int = 3


def fit_plain(estimator, X: np.ndarray, y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray) -> None:
    """Fit `estimator` on the training rows only (`X` (n, d) float32, `y` (n,) int)."""
    estimator.fit(X, y)


@dataclass(frozen=True)
class HeadKind:
    """One head kind; every field but `params` and `build` has a default.

    - `params`: the kind's `HeadParams` subclass; its `kind` attribute is the name.
    - `build(params, context) -> estimator`: unfitted, with scikit-learn's API; may raise
      HeadError when the training rows cannot support it.
    - `fit(estimator, X, y, X_val, y_val)`: the default ignores the validation rows.
    - `to_onnx(estimator, n_features, opset) -> (onnx.ModelProto, numpy dtype)`: (N, n_features)
      float32 -> (N, n_classes) probabilities; None when the kind cannot be exported.
    - `count_params(config, n_features, n_classes) -> int | None`: trained parameters.
    - `owns(estimator) -> bool`: whether a loaded estimator is of this kind.
    - `probabilities`: the end of the model card's sentence "Probabilities ...".
    - `from_features`: fitted on features; False for a kind made from saved heads (`ensemble`).
    - `attach_scaler(estimator, scaler, scale)`: make an estimator fitted on rows already scaled
      by `scaler` take raw features (sweeps scale once per scaling); None: the kind scales itself.
    - `parallel`: fits may run in parallel threads (False for Keras: its seed is global).
    """

    params: type[HeadParams]
    build: Callable[[Any, FitContext], Any]
    fit: Callable[..., None] = fit_plain
    to_onnx: Callable[[Any, int, int], tuple[Any, Any]] | None = None
    count_params: Callable[[dict, int, int], int | None] | None = None
    owns: Callable[[Any], bool] | None = None
    probabilities: str = "are the model's own and may be over-confident."
    from_features: bool = True
    attach_scaler: Callable[[Any, Any, str], None] | None = None
    parallel: bool = True

    @property
    def name(self) -> str:
        """The kind's name (`featstore fit-head NAME`)."""
        return self.params.kind


#: The modules of the built-in kinds, in listing order.
KINDS: Registry[HeadKind] = Registry(
    tuple(f"featstore.heads.kinds.{m}" for m in ("svm", "logistic", "dense", "knn", "ensemble"))
)


def register_head_kind(kind: HeadKind, *, replace: bool = False) -> HeadKind:
    """Add `kind` to the registry and return it; HeadError when its name is invalid, `all`,
    `sweep`, or taken (without `replace`)."""
    name = kind.name
    if not re.fullmatch(r"[a-z][a-z0-9_-]*", name or "") or name in RESERVED:
        raise HeadError(
            f"{name!r} cannot name a head kind (lower case letters, digits, - or _; not all or sweep)"
        )
    if name in KINDS and not replace:
        raise HeadError(f"head kind {name} is registered already; pass replace=True to replace it")
    return KINDS.add(name, kind, kind.build.__module__)


def unregister_head_kind(name: str) -> None:
    """Remove kind `name` from the registry (nothing happens when it is not there)."""
    KINDS.remove(name)


def available_head_kinds() -> list[str]:
    """Names of the registered head kinds, in registration order (built-ins first)."""
    return KINDS.names()


def get_head_kind(name: str) -> HeadKind:
    """Return the registered kind `name`; HeadError (listing the valid ones) when there is none."""
    kind = KINDS.get(name) if isinstance(name, str) else None
    if kind is None:
        raise HeadError(f"unknown head {name!r}; valid heads: {', '.join([*KINDS.names(), *RESERVED])}")
    return kind


def feature_kinds() -> list[HeadKind]:
    """The registered kinds fitted on features (what `all` and sweeps fit), in registration order."""
    return [k for k in KINDS.values() if k.from_features]


def kinds_of(kind: str) -> list[HeadKind]:
    """The kinds `fit-head KIND` fits: every kind fitted on features for `all`, else `kind`;
    HeadError for an unknown kind or one made from saved heads."""
    if kind == ALL:
        return feature_kinds()
    spec = get_head_kind(kind)
    if not spec.from_features:
        raise HeadError(
            f"{kind} heads are made from saved heads, not fitted on features: "
            f"featstore fit-head {kind} --heads A,B (see `featstore heads ls`)"
        )
    return [spec]


def make_params(kind: str, given: dict[str, Any]) -> list[HeadParams]:
    """The checked parameters of the kinds `fit-head KIND` fits, from values given by name (flags
    or keywords): each kind takes the values it has a field for.

    Raises
    ------
    HeadError
        An unknown kind, or one not fitted on features.
    InvalidOptionError
        A value no kind of `kind` takes, or a value out of range.
    """
    kinds = kinds_of(kind)
    names = list(dict.fromkeys(n for k in kinds for n in k.params.names()))
    for key in given:
        if key not in (*names, "random_state"):
            heads = f"{kind} heads" if len(kinds) == 1 else "any head kind"
            raise InvalidOptionError(key, f"is not an option of {heads} ({kind} takes {', '.join(names)})")
    out = []
    for k in kinds:
        names = (*k.params.names(), "random_state")
        out.append(k.params(**{key: value for key, value in given.items() if key in names}).check())
    return out


def kind_of(params: HeadParams) -> HeadKind:
    """The registered kind whose parameters `params` are; HeadError when there is none."""
    spec = get_head_kind(getattr(params, "kind", None))
    if not isinstance(params, spec.params):
        raise HeadError(f"{type(params).__name__} are not the parameters of {spec.name} heads")
    return spec


def find_head_kind(estimator) -> HeadKind | None:
    """The registered kind that owns the fitted `estimator`, or None."""
    return next((k for k in KINDS.values() if k.owns is not None and k.owns(estimator)), None)


def trainable_params(meta: dict) -> int | None:
    """Trained parameters of a saved head from its meta.json content (e.g. logistic: (n_features
    + 1) x n_classes); None when the kind counts none (svm, knn), is unknown, or sizes lack."""
    config = meta.get("config") or {}
    dims = [s.get("n_features") for s in meta.get("sources") or []]
    n_classes = len(meta.get("class_names") or [])
    if not dims or None in dims or n_classes < 2:
        return None
    try:
        kind = get_head_kind(config.get("kind"))
    except HeadError:
        return None
    return None if kind.count_params is None else kind.count_params(config, sum(dims), n_classes)
