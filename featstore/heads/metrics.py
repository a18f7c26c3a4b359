"""Classification metrics as JSON-ready dicts, and a head's probabilities over all classes."""

from __future__ import annotations

import numpy as np


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, class_names: list[str]) -> dict:
    """Score probabilities `proba` (n, n_classes), columns in `class_names` order, against labels
    `y_true` (n,): accuracy, balanced_accuracy, macro_f1, log_loss, top5_accuracy (over 5
    classes), per_class precision/recall/f1/support, confusion_matrix (rows true) and n."""
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
        "per_class": {
            name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, name in enumerate(class_names)
        },
        "confusion_matrix": m.confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }
    if len(class_names) > 5:
        out["top5_accuracy"] = float(m.top_k_accuracy_score(y_true, proba, k=5, labels=labels))
    return out


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
