"""Calibrated probabilities: a head's probabilities mapped, class by class or with one temperature,
so that they match how often the head is right; the map is fitted on held-out predictions (the
validation part, or out-of-fold predictions under cross-validation), never on training rows."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

#: The calibration maps (`params.CALIBRATIONS`): Platt's sigmoid per class (one against the
#: rest), isotonic regression per class, or one temperature dividing the log-probabilities
#: (Guo et al., 2017).
_EPS = 1e-7


def _logit(p: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)) computed in float32 with p clipped to [1e-7, 1 - 1e-7], as the exported
    graph computes it (the clipped 1 - p is coarse in float32, and the map must agree)."""
    p = np.clip(np.asarray(p, dtype=np.float32), np.float32(_EPS), np.float32(1 - _EPS))
    return (np.log(p) - np.log(np.float32(1) - p)).astype(np.float64)


class CalibratedHead(ClassifierMixin, BaseEstimator):
    """A fitted head whose probabilities over all `n_classes` classes go through a calibration
    map fitted by `fit_held` on held-out probabilities. `classes_` is every class index."""

    def __init__(self, head=None, method: str = "temperature", n_classes: int = 2):
        self.head = head
        self.method = method
        self.n_classes = n_classes

    def fit_held(self, proba: np.ndarray, y: np.ndarray) -> CalibratedHead:
        """Fit the map on held-out probabilities `proba` (n, n_classes) and labels `y` (n,)."""
        from scipy.optimize import minimize_scalar

        proba = np.asarray(proba, dtype=np.float64)
        y = np.asarray(y, dtype=int)
        self.classes_ = np.arange(self.n_classes)
        self.n_features_in_ = getattr(self.head, "n_features_in_", None)
        if self.method == "temperature":
            logp = np.log(np.clip(proba, _EPS, 1.0))

            def nll(log_t: float) -> float:
                z = logp / np.exp(log_t)
                z -= z.max(axis=1, keepdims=True)
                return float(-(z[np.arange(len(y)), y] - np.log(np.exp(z).sum(axis=1))).mean())

            self.temperature_ = float(np.exp(minimize_scalar(nll, bounds=(-4, 4), method="bounded").x))
        elif self.method == "sigmoid":
            from sklearn.linear_model import LogisticRegression

            self.a_, self.b_ = np.ones(self.n_classes), np.zeros(self.n_classes)
            for c in range(self.n_classes):
                target = (y == c).astype(int)
                if 0 < target.sum() < len(target):
                    lr = LogisticRegression(C=1e4).fit(_logit(proba[:, c])[:, None], target)
                    self.a_[c], self.b_[c] = float(lr.coef_[0, 0]), float(lr.intercept_[0])
        else:
            from sklearn.isotonic import IsotonicRegression

            self.maps_ = [
                IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(proba[:, c], y == c)
                for c in range(self.n_classes)
            ]
        return self

    def calibrate(self, proba: np.ndarray) -> np.ndarray:
        """Map probabilities (n, n_classes) through the fitted calibration; rows sum to 1."""
        proba = np.asarray(proba, dtype=np.float64)
        if self.method == "temperature":
            z = np.log(np.clip(proba, _EPS, 1.0)) / self.temperature_
            z -= z.max(axis=1, keepdims=True)
            out = np.exp(z)
        elif self.method == "sigmoid":
            out = 1.0 / (1.0 + np.exp(-(self.a_ * _logit(proba) + self.b_)))
        else:
            out = np.column_stack([m.predict(proba[:, c]) for c, m in enumerate(self.maps_)])
        total = out.sum(axis=1, keepdims=True)
        uniform = np.full_like(out, 1.0 / out.shape[1])
        return np.where(total > 0, out / np.where(total > 0, total, 1.0), uniform)

    def predict_proba(self, X) -> np.ndarray:
        """Return (n, n_classes) calibrated probabilities of feature rows `X` (n, d)."""
        raw = np.zeros((len(X), self.n_classes))
        raw[:, np.asarray(self.head.classes_, dtype=int)] = self.head.predict_proba(X)
        return self.calibrate(raw)

    def predict(self, X) -> np.ndarray:
        """Return (n,) predicted class indices."""
        return self.predict_proba(X).argmax(axis=1)

    def save_files(self, folder):
        """The head's own files (a Keras head's network), if it has any."""
        return self.head.save_files(folder) if hasattr(self.head, "save_files") else []

    def load_files(self, folder) -> None:
        """Load what `save_files` wrote."""
        if hasattr(self.head, "load_files"):
            self.head.load_files(folder)


def calibrate_head(estimator, method: str, held: np.ndarray, y: np.ndarray, n_classes: int) -> CalibratedHead:
    """`estimator` wrapped in the calibration `method` fitted on held-out probabilities `held`
    ((repeats, n, n_classes): every repeat's rows are used) and labels `y` (n,)."""
    held = np.asarray(held)
    proba = held.reshape(-1, held.shape[-1])
    return CalibratedHead(estimator, method, n_classes).fit_held(proba, np.tile(y, held.shape[0]))


def calibrated_fit(fitted, method: str | None, held, y, where: str):
    """A `saved.Fitted` with its estimator calibrated by `method` (None: unchanged) on held-out
    probabilities `held` and labels `y` (`where` names them); its config gets `calibrate`, its
    meta `calibration` (method, where, the map's figures and the test ECE before calibration)."""
    from dataclasses import replace

    from featstore.heads.metrics import calibration, probabilities_of

    if method is None:
        return fitted
    n_classes = len(fitted.data.class_names)
    head = calibrate_head(fitted.estimator, method, held, y, n_classes)
    record = {"method": method, "fitted_on": where, "n": int(np.asarray(held).shape[-2])}
    if method == "temperature":
        record["temperature"] = head.temperature_
    test = fitted.split.test
    if len(test):
        raw = probabilities_of(fitted.estimator, fitted.data.X, test, n_classes)
        record["test_ece_before"] = calibration(fitted.data.labels[test], raw)["ece"]
    config = {**fitted.config, "calibrate": method}
    return replace(fitted, estimator=head, config=config, extra={**fitted.extra, "calibration": record})
