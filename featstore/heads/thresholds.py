"""An "unknown" answer: the probability below which a head does not name a class, given as a
number or chosen on held-out predictions for a target precision."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from featstore.errors import HeadError, InvalidOptionError
from featstore.store.layout import StoreLayout

#: What a scored row says instead of a class when the head is not sure.
UNKNOWN = "unknown"


@dataclass
class Threshold:
    """A rejection threshold: rows whose top probability is below `value` are `unknown`.
    Chosen for `target` precision on `n` held-out images (`source`), where it answered
    `coverage` of them with precision `precision`; None for a threshold given by hand."""

    value: float
    target: float | None = None
    precision: float | None = None
    coverage: float | None = None
    n: int | None = None
    source: str | None = None

    def describe(self) -> str:
        """One line: the threshold and, when chosen, what it gave on the held-out images."""
        if self.target is None:
            return f"rows below probability {self.value:.4g} are {UNKNOWN}"
        return (
            f"rows below probability {self.value:.4g} are {UNKNOWN}: chosen for precision {self.target:g} on "
            f"{self.n} {self.source}, where it answered {self.coverage:.1%} with precision {self.precision:.4f}"
        )


def threshold_for_precision(proba: np.ndarray, y: np.ndarray, target: float) -> tuple[float, float, float]:
    """The lowest threshold on the top probability at which the rows kept (top probability >=
    threshold) of `proba` (n, classes) against labels `y` (n,) reach precision `target` (their
    accuracy); returns (threshold, precision, coverage). InvalidOptionError when no threshold
    reaches it."""
    top = proba.max(axis=1)
    right = proba.argmax(axis=1) == y
    order = np.argsort(-top, kind="stable")
    kept_right = np.cumsum(right[order])
    precision = kept_right / np.arange(1, len(order) + 1)
    # a cut can only fall between distinct probabilities: keep the last row of each run of ties
    last = np.r_[top[order][1:] != top[order][:-1], True]
    ok = np.flatnonzero((precision >= target) & last)
    if not len(ok):
        best = float(precision[last].max()) if len(order) else 0.0
        raise InvalidOptionError(
            "target_precision",
            f"no threshold reaches precision {target:g} on the held-out images (at most {best:.4f})",
        )
    i = ok[-1]
    return float(top[order][i]), float(precision[i]), float((i + 1) / len(order))


def held_out(layout: StoreLayout, head_id: str, estimator, meta: dict) -> tuple[np.ndarray, np.ndarray, str]:
    """Probabilities (n, classes) and labels (n,) of images head `head_id` (its loaded `estimator`
    and `meta`) did not train on: its validation part, or (a head refitted on all of training and
    validation) out-of-fold predictions of its setting on 5 stratified folds of its training
    images; and a description of them. HeadError for an ensemble with no validation part."""
    from featstore.data.splits import split_from_digests
    from featstore.heads.metrics import probabilities_of
    from featstore.heads.saved import split_rows
    from featstore.heads.training_data import close_features, load_for_scoring

    data = load_for_scoring(layout, list(meta["feature_sets"]))
    try:
        rows = split_rows(layout, head_id, "no threshold can be chosen on its held-out images")
        split = split_from_digests(rows, data.digests, meta.get("split") or {})
        n_classes = len(data.class_names)
        if len(split.val):
            proba = probabilities_of(estimator, data.X, split.val, n_classes)
            return proba, data.labels[split.val], "validation images"
        if not isinstance(data.X, np.ndarray):
            raise HeadError(
                f"head {head_id} has no validation part, and its feature set is too large to predict its "
                "training images out of fold in memory; give --reject-below"
            )
        return _out_of_fold(meta, data, split, n_classes, head_id)
    finally:
        close_features(data)


def _out_of_fold(meta: dict, data, split, n_classes: int, head_id: str):
    from featstore.heads.crossval import Folds, cross_validate
    from featstore.heads.registry import get_head_kind
    from featstore.heads.trials import Setting

    config = dict(meta["config"])
    kind = config.pop("kind")
    spec = get_head_kind(kind)
    if not spec.from_features:
        raise HeadError(
            f"head {head_id} ({kind}) has no validation part to choose a threshold on; give --reject-below"
        )
    folds = Folds.of(data.labels, split, 5, 1, split.seed or 0)
    (trial,) = cross_validate(
        [Setting(spec.params.from_dict(config))], data.X, data.labels, n_classes, folds, ""
    )
    if trial.held is None:
        raise HeadError(f"head {head_id}: its setting could not be cross-validated ({trial.error})")
    where = f"training images, predicted out of fold ({folds.folds} folds)"
    return trial.held[0], data.labels[folds.pool], where
