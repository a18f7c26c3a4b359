"""Classification metrics as JSON-ready dicts, and a head's probabilities over all classes."""

from __future__ import annotations

import numpy as np


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, class_names: list[str]) -> dict:
    """Score probabilities `proba` (n, n_classes), columns in `class_names` order, against labels
    `y_true` (n,): accuracy, balanced_accuracy, macro_f1, log_loss, top5_accuracy (over 5
    classes), ece and reliability (see `calibration`), per_class precision/recall/f1/support,
    confusion_matrix (rows true) and n."""
    from sklearn import metrics as m

    labels = np.arange(len(class_names))
    y_pred = proba.argmax(axis=1)
    p, r, f, s = m.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    out = {
        "n": int(len(y_true)),
        "accuracy": float(m.accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(m.balanced_accuracy_score(y_true, y_pred)),
        "macro_f1": float(m.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "log_loss": float(m.log_loss(y_true, _normalised(proba), labels=labels)),
        **calibration(y_true, proba),
        "per_class": {
            name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, name in enumerate(class_names)
        },
        "confusion_matrix": m.confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }
    if len(class_names) > 5:
        out["top5_accuracy"] = float(m.top_k_accuracy_score(y_true, proba, k=5, labels=labels))
    return out


#: Equal-width bins of the top probability for the expected calibration error.
ECE_BINS = 10


def calibration(y_true: np.ndarray, proba: np.ndarray, bins: int = ECE_BINS) -> dict:
    """How far the most probable class's probability is from how often it is right, for
    probabilities `proba` (n, n_classes) and labels `y_true` (n,): `ece`, the expected calibration
    error (the mean over `bins` equal-width bins of the top probability of |accuracy - mean
    probability|, weighted by the bin's share of rows; 0 is calibrated, in [0, 1]), and
    `reliability`, one [low, high, n, mean probability, accuracy] per non-empty bin."""
    proba = np.asarray(proba, dtype=np.float64)
    if not len(proba):
        return {"ece": None, "reliability": []}
    top = proba.max(axis=1)
    right = proba.argmax(axis=1) == np.asarray(y_true)
    which = np.minimum((top * bins).astype(int), bins - 1)
    ece, rows = 0.0, []
    for b in range(bins):
        inside = which == b
        n = int(inside.sum())
        if not n:
            continue
        conf, acc = float(top[inside].mean()), float(right[inside].mean())
        ece += n / len(top) * abs(acc - conf)
        rows.append([b / bins, (b + 1) / bins, n, round(conf, 4), round(acc, 4)])
    return {"ece": float(ece), "reliability": rows}


def _normalised(proba: np.ndarray) -> np.ndarray:
    """Rows clipped away from 0 and rescaled to sum to exactly 1 (float32 softmax drifts)."""
    p = np.clip(np.asarray(proba, dtype=np.float64), 1e-15, 1.0)
    return p / p.sum(axis=1, keepdims=True)


def class_probabilities(estimator, X: np.ndarray, n_classes: int) -> np.ndarray:
    """Probabilities of a fitted head for rows `X` (n, d): (n, n_classes) float64, column j class j;
    classes the head never saw in training get 0."""
    p = estimator.predict_proba(X)
    out = np.zeros((len(X), n_classes))
    out[:, np.asarray(estimator.classes_, dtype=int)] = p
    return out


#: Rows scored at a time: one block of features in memory, never a whole part of a large set.
SCORE_ROWS = 8192


def probabilities_of(estimator, X, rows: np.ndarray, n_classes: int) -> np.ndarray:
    """`class_probabilities` of rows `rows` of `X` (an array, or features left in the shards:
    `heads.streaming.StoredFeatures`), read and scored `SCORE_ROWS` at a time."""
    rows = np.asarray(rows)
    out = np.zeros((len(rows), n_classes))
    for start in range(0, len(rows), SCORE_ROWS):
        part = rows[start : start + SCORE_ROWS]
        out[start : start + len(part)] = class_probabilities(estimator, X[part], n_classes)
    return out
