"""The head-kind registry: each kind declares how it is built, fitted, converted to ONNX and
counted, so a new kind is one `register_head_kind(HeadKind(...))`.

`fit_head`, sweeps, `evaluate`, `featstore export` (`scoring.deploy`) and the report's parameter
counts look kinds up here and never branch on a kind's name. The built-in kinds (svm,
logistic, dense, knn) live in `featstore.heads.kinds`, and `ensemble` (soft voting of saved
heads) in `featstore.heads.ensemble`, both imported on the first lookup.

Imports `errors` only (the built-in kinds' modules inside `_load_builtins`); light enough for the
report to count parameters without scikit-learn.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from featstore.errors import HeadError

if TYPE_CHECKING:
    import numpy as np

    from featstore.heads.options import HeadConfig

#: `featstore fit-head all` fits every kind fitted on features; no kind may take this name.
ALL = "all"
#: `featstore fit-head sweep` fits a grid of settings of every kind; no kind may take this name.
SWEEP = "sweep"
#: The names `fit-head` gives its own meaning.
RESERVED = (ALL, SWEEP)


@dataclass(frozen=True)
class FitContext:
    """What a builder may need to know about the training rows: `n_jobs` (parallel workers),
    `n_train` (training rows, e.g. to cap knn's k) and `min_per_class` (fewest training rows of
    one class, e.g. to cap cross-validation folds)."""

    n_jobs: int = 1
    n_train: int | None = None
    min_per_class: int = 3


def fit_plain(estimator, X: np.ndarray, y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray) -> None:
    """Fit `estimator` on the training rows only (`X` (n, d) float32, `y` (n,) int)."""
    estimator.fit(X, y)


@dataclass(frozen=True)
class HeadKind:
    """One head kind.

    Parameters
    ----------
    name
        The kind's name (`featstore fit-head NAME`): lower case letters, digits, `-` or `_`.
    build
        `build(config, context) -> estimator`: an unfitted estimator with scikit-learn's API
        (`fit`, `predict_proba`, `classes_`) from a `HeadConfig` resolved for this kind and a
        `FitContext`. It may raise HeadError when the training rows cannot support it.
    options
        The `HeadConfig` fields the kind uses (recorded in the head's meta.json with the kind
        and `random_state`).
    default_scale
        The scaling used when `HeadConfig.scale` is None.
    default_C
        `default_C(config) -> tuple of floats` when `HeadConfig.C` is None; None for kinds
        without C.
    c_grid
        The kind searches a grid of C values; with `fit-head all`, `--C` goes to these kinds.
    check
        `check(config)` raises InvalidOptionError for values this kind refuses.
    fit
        `fit(estimator, X, y, X_val, y_val)`; the default (`fit_plain`) ignores the
        validation rows.
    to_onnx
        `to_onnx(estimator, n_features, opset) -> (onnx.ModelProto, numpy dtype)`: a graph from
        (N, n_features) float32 to (N, len(estimator.classes_)) probabilities of that dtype;
        None when the kind cannot be exported.
    count_params
        `count_params(config_dict, n_features, n_classes) -> int | None`: trained parameters
        (None: not a meaningful count, e.g. an svm's support vectors).
    owns
        `owns(estimator) -> bool`: whether a loaded estimator is of this kind (for ONNX export of
        an estimator whose kind is not given).
    probabilities
        How the kind's probabilities come about, the end of the model card's sentence
        "Probabilities ...".
    from_features
        The kind is fitted on features (`fit-head KIND`, `all`, sweeps); False for a kind made
        from saved heads (`ensemble`), which `all` and sweeps leave out.
    attach_scaler
        `attach_scaler(estimator, scaler, scale)`: make an estimator built with scale `none`
        and fitted on features already scaled by the fitted `scaler` (scaling `scale`) take
        raw features, as if it had been built with `scale`. Sweeps scale the features once per
        scaling and share them between settings; None: the kind scales inside each fit.
    parallel
        Fits of this kind may run in parallel threads of one process (False for Keras, whose
        seed is process-wide).
    """

    name: str
    build: Callable[[HeadConfig, FitContext], Any]
    options: tuple[str, ...] = ("scale",)
    default_scale: str = "standard"
    default_C: Callable[[HeadConfig], tuple[float, ...]] | None = None
    c_grid: bool = False
    check: Callable[[HeadConfig], None] | None = None
    fit: Callable[..., None] = fit_plain
    to_onnx: Callable[[Any, int, int], tuple[Any, Any]] | None = None
    count_params: Callable[[dict, int, int], int | None] | None = None
    owns: Callable[[Any], bool] | None = None
    probabilities: str = "are the model's own and may be over-confident."
    from_features: bool = True
    attach_scaler: Callable[[Any, Any, str], None] | None = None
    parallel: bool = True

    @property
    def class_weights(self) -> bool:
        """Whether the kind takes class weights (`HeadConfig.class_weight`)."""
        return "class_weight" in self.options


#: The modules that register the built-in kinds, in registration order.
BUILTIN_MODULES = ("featstore.heads.kinds", "featstore.heads.ensemble")
_KINDS: dict[str, HeadKind] = {}
_BUILTINS_LOADED = False


def _load_builtins() -> None:
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED = True  # before the import: kinds registers through this module
        try:
            for module in BUILTIN_MODULES:
                importlib.import_module(module)
        except BaseException:
            _BUILTINS_LOADED = False
            raise


def register_head_kind(kind: HeadKind, *, replace: bool = False) -> HeadKind:
    """Add `kind` to the registry and return it.

    Raises
    ------
    HeadError
        The name is not a valid kind name, is `all` or `sweep`, or is taken (without `replace`).
    """
    _load_builtins()
    if not re.fullmatch(r"[a-z][a-z0-9_-]*", kind.name) or kind.name in RESERVED:
        raise HeadError(
            f"{kind.name!r} cannot name a head kind (lower case letters, digits, - or _; not all or sweep)"
        )
    if kind.name in _KINDS and not replace:
        raise HeadError(f"head kind {kind.name} is registered already; pass replace=True to replace it")
    _KINDS[kind.name] = kind
    return kind


def unregister_head_kind(name: str) -> None:
    """Remove kind `name` from the registry (nothing happens when it is not there)."""
    _load_builtins()
    _KINDS.pop(name, None)


def available_head_kinds() -> list[str]:
    """Names of the registered head kinds, in registration order (built-ins first)."""
    _load_builtins()
    return list(_KINDS)


def get_head_kind(name: str) -> HeadKind:
    """Return the registered kind `name`.

    Raises
    ------
    HeadError
        No such kind; the message lists the valid ones.
    """
    _load_builtins()
    try:
        return _KINDS[name]
    except (KeyError, TypeError):
        valid = ", ".join([*_KINDS, *RESERVED])
        raise HeadError(f"unknown head {name!r}; valid heads: {valid}") from None


def feature_kinds() -> list[HeadKind]:
    """The registered kinds fitted on features (what `all` and sweeps fit), in registration order."""
    _load_builtins()
    return [k for k in _KINDS.values() if k.from_features]


def kinds_of(kind: str) -> list[HeadKind]:
    """The kinds `featstore fit-head KIND` fits: every kind fitted on features for `all`, else `kind`.

    Raises
    ------
    HeadError
        No such kind, or a kind not fitted on features (an ensemble is made from saved heads).
    """
    if kind == ALL:
        return feature_kinds()
    spec = get_head_kind(kind)
    if not spec.from_features:
        raise HeadError(
            f"{kind} heads are made from saved heads, not fitted on features: "
            f"featstore fit-head {kind} --heads A,B (see `featstore heads ls`)"
        )
    return [spec]


def find_head_kind(estimator) -> HeadKind | None:
    """The registered kind that owns the fitted `estimator`, or None."""
    _load_builtins()
    return next((k for k in _KINDS.values() if k.owns is not None and k.owns(estimator)), None)


def head_params(meta: dict) -> int | None:
    """Trained parameters of a saved head, from its meta.json content.

    Parameters
    ----------
    meta
        A head's meta.json: `config` (with `kind`), `sources` (each with `n_features`) and
        `class_names`.

    Returns
    -------
    int or None
        The kind's count (e.g. logistic: (n_features + 1) x n_classes weights, one column for
        2 classes; dense: every layer's weights and biases); None when the kind counts none
        (svm, knn), is not registered, or the meta lacks the sizes.
    """
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
