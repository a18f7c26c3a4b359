"""Cross-validated class probabilities: every labelled image predicted by a head fitted on the
other folds. Folds are stratified and keep the images of one content digest together."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from featstore.errors import DatasetError, InvalidOptionError
from featstore.heads.registry import FitContext, available_head_kinds, fit_plain, get_head_kind
from featstore.inspect.options import CrossValOptions


@dataclass
class CrossValPredictions:
    """`proba` (n, n_present) float64 cross-validated probabilities over the classes present,
    `classes` the original class of each column, `y` (n,) labels as column indices, and
    `predicted` (n,) the original class of each row's most probable column."""

    proba: np.ndarray
    classes: np.ndarray
    y: np.ndarray

    @property
    def predicted(self) -> np.ndarray:
        """Original class index of each row's most probable class."""
        return self.classes[np.argmax(self.proba, axis=1)]

    @property
    def accuracy(self) -> float:
        """Fraction of rows whose most probable class is their label."""
        return float(np.mean(np.argmax(self.proba, axis=1) == self.y)) if len(self.y) else 0.0


def cv_kinds() -> list[str]:
    """The head kinds cross-validation can use: fitted on training rows only (not dense, which
    stops early on validation rows, nor ensembles)."""
    kinds = [get_head_kind(k) for k in available_head_kinds()]
    return [k.name for k in kinds if k.fit is fit_plain and getattr(k, "from_features", True)]


def check_cross_validation(labels: np.ndarray, class_names: list[str], options: CrossValOptions) -> None:
    """Raise InvalidOptionError for a kind that cannot be cross-validated, DatasetError for fewer
    than 2 classes or a class with fewer images than folds."""
    if options.head not in cv_kinds():
        raise InvalidOptionError(
            "head",
            f"must be one of {', '.join(cv_kinds())} (kinds fitted on training rows only), not {options.head!r}",
        )
    present, counts = np.unique(labels, return_counts=True)
    if len(present) < 2:
        only = class_names[int(present[0])] if len(present) else "(none)"
        raise DatasetError(
            f"cross-validated predictions need at least 2 classes with images; this feature set has only {only!r}"
        )
    if counts.min() < options.folds:
        few = class_names[int(present[int(np.argmin(counts))])]
        raise DatasetError(
            f"class {few!r} has {int(counts.min())} image(s); {options.folds}-fold cross-validation needs at "
            f"least {options.folds} per class (add images, or lower --folds to {max(2, int(counts.min()))})"
            if counts.min() >= 2
            else f"class {few!r} has 1 image; cross-validation needs at least 2 per class (add images)"
        )


def cross_val_proba(
    X: np.ndarray, labels: np.ndarray, groups: list[str], class_names: list[str], options: CrossValOptions
) -> CrossValPredictions:
    """Cross-validated probabilities of `options.head` on labelled rows `X` (n, d) float32 (as
    stored), `labels` (n,) int, `groups` (n,) content digests (one digest, one fold);
    `class_names` for messages. Raises as `check_cross_validation`, or DatasetError when the
    folds cannot be made."""
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict

    check_cross_validation(labels, class_names, options)
    classes, y = np.unique(labels, return_inverse=True)
    fewest = int(np.bincount(y).min())
    kind = get_head_kind(options.head)
    params = kind.params.from_dict({"C": options.C, "random_state": options.seed}).check()
    estimator = kind.build(params, FitContext(1, len(y) * (options.folds - 1) // options.folds, fewest))
    cv = StratifiedGroupKFold(n_splits=options.folds, shuffle=True, random_state=options.seed)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence and small-class warnings: the result says enough
            proba = cross_val_predict(
                estimator, X, y, groups=list(groups), cv=cv, method="predict_proba", n_jobs=options.n_jobs
            )
    except ValueError as err:
        raise DatasetError(
            f"{options.folds}-fold cross-validation cannot split these images ({err}); lower --folds or add images"
        ) from None
    return CrossValPredictions(np.asarray(proba, dtype=np.float64), classes, y)
