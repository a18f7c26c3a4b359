"""The one fit engine: `Setting`s fitted on `Prepared` rows (cut once, scaled once per scaling),
scored on the validation rows, in parallel threads; the best of each kind chosen."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from featstore.errors import HeadError
from featstore.heads.metrics import class_probabilities, classification_metrics
from featstore.heads.params import HeadParams, make_scaler
from featstore.heads.registry import FitContext, get_head_kind

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Setting:
    """One head to fit: checked `params` and the values a grid set (`shown`), which make its label,
    e.g. `logistic C=0.1 scale=l2`."""

    params: HeadParams
    shown: dict = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """The head kind's name."""
        return self.params.kind

    @property
    def label(self) -> str:
        """The kind and the values the grid set."""
        return " ".join([self.kind, *(f"{k}={_text(v)}" for k, v in self.shown.items())])


def _text(value) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(_text(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


class Prepared:
    """The rows settings are fitted on: training `X` (n, d) float32 and `y` (n,) int, validation
    `X_val`, `y_val`, and each scaling fitted once on the training rows (`scaled`)."""

    def __init__(self, X, y, X_val, y_val, n_classes: int):
        self.X_train, self.y_train = X, y
        self.X_val, self.y_val = X_val, y_val
        self.n_classes = n_classes
        self.fewest = int(np.bincount(y)[np.unique(y)].min())
        self._scaled: dict[str, tuple] = {}
        self._lock = threading.Lock()

    @classmethod
    def of(cls, X: np.ndarray, labels: np.ndarray, split, n_classes: int) -> Prepared:
        """The training and validation rows of `split` (a `data.splits.Split`) of `X`."""
        return cls(X[split.train], labels[split.train], X[split.val], labels[split.val], n_classes)

    def scaled(self, scale: str) -> tuple:
        """(fitted scaler, training rows, validation rows) scaled by `scale`, computed once."""
        with self._lock:
            if scale not in self._scaled:
                scaler = make_scaler(scale).fit(self.X_train)
                tr = scaler.transform(self.X_train).astype(np.float32)
                val = scaler.transform(self.X_val).astype(np.float32) if len(self.X_val) else self.X_val
                self._scaled[scale] = (scaler, tr, val)
            return self._scaled[scale]


@dataclass
class Trial:
    """One setting fitted on `source` (`a@x` or `a@x+b@y`): the estimator (None with `error` when
    it could not be fitted), its validation figures or, chosen by cross-validation, its
    `cv_accuracy` (mean over folds), `cv_std` and `cv_log_loss`, and fit seconds. `held` is
    its probabilities on the held-out rows, (repeats, n, classes) float32: the validation rows
    (one repeat) or, by cross-validation, every pool row predicted out of fold once per repeat."""

    setting: Setting
    source: str
    estimator: object = None
    val_accuracy: float | None = None
    val_macro_f1: float | None = None
    val_log_loss: float | None = None
    fit_seconds: float | None = None
    error: str | None = None
    cv_accuracy: float | None = None
    cv_std: float | None = None
    cv_log_loss: float | None = None
    held: np.ndarray | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        """Whether the setting could be fitted (on the training rows, or on every fold)."""
        return self.error is None and (self.estimator is not None or self.cv_accuracy is not None)

    @property
    def key(self) -> tuple:
        """Sort key, best first: validation accuracy, then macro F1, then lower log loss; by
        cross-validation: mean accuracy, then lower log loss, then the simpler setting."""
        if self.ok and self.cv_accuracy is not None:
            return (0, -round(self.cv_accuracy, 9), self.cv_log_loss or 0.0, *simplicity(self.setting))
        if self.estimator is None or self.val_accuracy is None:
            return (1, 0.0, 0.0, 0.0)
        return (0, -self.val_accuracy, -(self.val_macro_f1 or 0.0), self.val_log_loss or 0.0)


#: Simpler first, to break ties accuracy and log loss leave (then smaller C, then more neighbours).
SIMPLICITY = {"logistic": 0, "knn": 1, "svm": 2, "dense": 3}


def simplicity(setting: Setting) -> tuple:
    """Sort key of a setting's complexity, simplest first."""
    p = setting.params

    def number(value) -> float:
        if isinstance(value, (list, tuple)):
            return float(min(value)) if value else 0.0
        return float(value or 0.0)

    return (
        SIMPLICITY.get(setting.kind, len(SIMPLICITY)),
        number(getattr(p, "C", 0)),
        -number(getattr(p, "k", 0)),
    )


def fit_setting(
    setting: Setting, prep: Prepared, source: str, n_jobs: int = 1, strict: bool = False
) -> Trial:
    """Fit `setting` on the training rows of `prep` and score it on the validation rows.

    A kind with `attach_scaler` is fitted on the shared scaled rows, then given the scaler,
    so it takes raw features like any saved head. A setting the rows cannot support gives a
    Trial with `error` (with `strict`, the HeadError).
    """
    spec = get_head_kind(setting.kind)
    params = setting.params
    scale = getattr(params, "scale", "none")
    shared = spec.attach_scaler is not None and scale != "none"
    scaler, X, X_val = (None, prep.X_train, prep.X_val)
    if shared:
        scaler, X, X_val = prep.scaled(scale)
        params = replace(params, scale="none")
    trial = Trial(setting, source)
    try:
        estimator = spec.build(params, FitContext(n_jobs, len(X), prep.fewest))
        t0 = time.perf_counter()
        spec.fit(estimator, X, prep.y_train, X_val, prep.y_val)
        trial.fit_seconds = round(time.perf_counter() - t0, 3)
    except (HeadError, ValueError) as err:
        if strict:
            raise
        trial.error = str(err).splitlines()[0] if str(err) else type(err).__name__
        return trial
    if len(X_val):
        proba = class_probabilities(estimator, X_val, prep.n_classes)
        m = classification_metrics(prep.y_val, proba, [str(i) for i in range(prep.n_classes)])
        trial.val_accuracy, trial.val_macro_f1, trial.val_log_loss = (
            m["accuracy"],
            m["macro_f1"],
            m["log_loss"],
        )
        trial.held = proba.astype(np.float32)[None]
    if shared:
        spec.attach_scaler(estimator, scaler, scale)
    trial.estimator = estimator
    return trial


def run_trials(
    settings: list[Setting], prep: Prepared, source: str, n_jobs: int = 1, progress: Progress | None = None
) -> list[Trial]:
    """Fit every setting on `prep`; return the trials in `settings` order.

    With `n_jobs` > 1 settings run in threads, BLAS held to its share of the cores; kinds
    that are not `parallel` (Keras) take turns under one lock and start first.
    `progress(done, total)` is called from the calling thread.
    """
    total = len(settings)
    if n_jobs <= 1 or total <= 1:
        out = []
        for i, s in enumerate(settings):
            out.append(fit_setting(s, prep, source, n_jobs=max(1, n_jobs)))
            if progress is not None:
                progress(i + 1, total)
        return out
    import os

    import joblib
    from threadpoolctl import threadpool_limits

    lock = threading.Lock()

    def one(i: int, setting: Setting):
        if get_head_kind(setting.kind).parallel:
            return i, fit_setting(setting, prep, source)
        with lock:
            return i, fit_setting(setting, prep, source)

    out: list = [None] * total
    blas = max(1, (os.cpu_count() or 1) // n_jobs)
    # the settings that take turns first: their chain then runs beside the others, not after them
    order = sorted(range(total), key=lambda i: get_head_kind(settings[i].kind).parallel)
    with threadpool_limits(limits=blas, user_api="blas"):
        tasks = (joblib.delayed(one)(i, settings[i]) for i in order)
        results = joblib.Parallel(n_jobs=n_jobs, backend="threading", return_as="generator_unordered")(tasks)
        for done, (i, trial) in enumerate(results, 1):
            out[i] = trial
            if progress is not None:
                progress(done, total)
    return out


def ranked(trials: list[Trial]) -> list[Trial]:
    """The trials best first (see `Trial.key`); trials that failed last, in their order."""
    return sorted(trials, key=lambda t: t.key)


def choose(trials: list[Trial]) -> dict[str, Trial]:
    """The best fitted trial of each kind and of all (`""`); kinds whose every setting failed are
    left out."""
    best: dict[str, Trial] = {}
    for trial in ranked(trials):
        if not trial.ok:
            continue
        best.setdefault("", trial)
        best.setdefault(trial.setting.kind, trial)
    return best
