"""Classical heads on cached features: SVM, logistic regression, k-NN (scikit-learn pipelines)
and a small dense network (Keras, wrapped to the scikit-learn API).

Owns how each head kind is built from its options. Never reads or writes the store; TensorFlow
is imported only when a dense head is fitted or loaded.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from featstore.deps import require
from featstore.errors import HeadError

HEAD_KINDS = ("svm", "logistic", "dense", "knn")
#: Default C: a grid searched by 3-fold cross-validation for logistic, one value for the SVMs.
DEFAULT_C = {
    ("logistic", None): (0.01, 0.1, 1.0, 10.0),
    ("svm", "rbf"): (10.0,),
    ("svm", "linear"): (0.001,),
    ("dense", None): (1.0,),
    ("knn", None): (1.0,),
}
SCALINGS = ("standard", "l2", "none")
KERNELS = ("rbf", "linear")


@dataclass
class HeadConfig:
    """Options of one head; unused ones are ignored by the kinds that do not take them."""

    kind: str
    scale: str | None = None
    C: list[float] | None = None
    kernel: str = "rbf"
    hidden: list[int] = field(default_factory=lambda: [256])
    dropout: float = 0.5
    epochs: int = 30
    learning_rate: float = 1e-3
    patience: int = 5
    k: int = 10
    random_state: int = 0

    def to_dict(self) -> dict:
        """Return a JSON-ready dict with only the options this kind uses."""
        keep = {
            "svm": ("scale", "C", "kernel"),
            "logistic": ("scale", "C"),
            "dense": ("scale", "hidden", "dropout", "epochs", "learning_rate", "patience"),
            "knn": ("scale", "k"),
        }[self.kind]
        d = asdict(self)
        return {"kind": self.kind, **{k: d[k] for k in keep}, "random_state": self.random_state}

    @classmethod
    def from_dict(cls, data: dict) -> HeadConfig:
        """Rebuild from `to_dict` output."""
        return cls(**data)

    def check(self) -> HeadConfig:
        """Raise HeadError for an unknown kind or an option out of range; return self."""
        if self.kind not in HEAD_KINDS:
            raise HeadError(f"unknown head {self.kind!r}; valid heads: {', '.join(HEAD_KINDS)}, all")
        if self.scale is None:
            self.scale = "none" if self.kind == "knn" else "standard"
        if self.scale not in SCALINGS:
            raise HeadError(f"--scale must be one of {', '.join(SCALINGS)}, not {self.scale!r}")
        if self.kernel not in KERNELS:
            raise HeadError(f"--kernel must be one of {', '.join(KERNELS)}, not {self.kernel!r}")
        if self.C is None:
            self.C = list(DEFAULT_C[(self.kind, self.kernel if self.kind == "svm" else None)])
        if not self.C or any(not np.isfinite(c) or c <= 0 for c in self.C):
            raise HeadError(f"--C values must be positive numbers, not {self.C}")
        if self.kind == "svm" and len(self.C) > 1:
            raise HeadError("svm takes one --C value; the logistic head searches a grid of C")
        if not 0 <= self.dropout < 1 or self.epochs < 1 or self.k < 1 or any(h < 1 for h in self.hidden):
            raise HeadError("--dropout must be in [0, 1), --epochs, --k and --hidden at least 1")
        return self


def parse_floats(text: str, what: str = "--C") -> list[float]:
    """Parse "0.01,0.1,1" into floats, or raise HeadError naming the bad item."""
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError as err:
        raise HeadError(
            f"{what} must be a comma-separated list of numbers, like 0.01,0.1,1; got {text!r}"
        ) from err
    if not values:
        raise HeadError(f"{what} must list at least one number")
    return values


def parse_ints(text: str, what: str = "--hidden") -> list[int]:
    """Parse "512,128" into ints, or raise HeadError."""
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as err:
        raise HeadError(
            f"{what} must be a comma-separated list of integers, like 512,128; got {text!r}"
        ) from err


def _scaler(scale: str):
    from sklearn.preprocessing import Normalizer, StandardScaler

    return {"standard": StandardScaler(), "l2": Normalizer(norm="l2"), "none": "passthrough"}[scale]


def build_head(config: HeadConfig, n_jobs: int = 1, n_train: int | None = None, min_per_class: int = 3):
    """Return an unfitted estimator for `config` (scikit-learn API: fit, predict, predict_proba).

    `n_train` (training rows) caps knn's k; `min_per_class` (fewest training rows of one class)
    caps the folds of logistic's C search and of the svm's probability calibration at 3.

    Raises
    ------
    HeadError
        The svm needs 2 training images of every class to calibrate its probabilities.
    """
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.svm import SVC, LinearSVC

    config.check()
    scale = _scaler(config.scale)
    folds = min(3, min_per_class)
    if config.kind == "logistic":
        if len(config.C) == 1 or folds < 2:
            c = config.C[0] if len(config.C) == 1 else sorted(config.C)[len(config.C) // 2]
            clf = LogisticRegression(C=c, max_iter=1000, random_state=config.random_state)
        else:
            clf = LogisticRegressionCV(
                Cs=config.C,
                cv=folds,
                max_iter=1000,
                n_jobs=n_jobs,
                scoring="accuracy",
                l1_ratios=(0.0,),
                use_legacy_attributes=False,
                random_state=config.random_state,
            )
    elif config.kind == "svm":
        c = config.C[0]
        base = (
            LinearSVC(C=c, dual=False, random_state=config.random_state)
            if config.kernel == "linear"
            else SVC(kernel="rbf", C=c, gamma="scale", random_state=config.random_state)
        )
        if folds < 2:
            raise HeadError(
                "svm calibrates its probabilities by cross-validation and needs at least 2 training "
                f"images of every class (one class has {min_per_class}); add images or use logistic"
            )
        clf = CalibratedClassifierCV(base, method="sigmoid", cv=folds, n_jobs=n_jobs)
    elif config.kind == "knn":
        k = min(config.k, n_train) if n_train else config.k
        clf = KNeighborsClassifier(n_neighbors=k, metric="cosine", weights="distance", n_jobs=n_jobs)
    else:
        return DenseHead(
            hidden=tuple(config.hidden),
            dropout=config.dropout,
            epochs=config.epochs,
            learning_rate=config.learning_rate,
            patience=config.patience,
            scale=config.scale,
            random_state=config.random_state,
        )
    return Pipeline([("scale", scale), ("clf", clf)])


class DenseHead(ClassifierMixin, BaseEstimator):
    """A small Keras network on features: [Dense(h, relu) + Dropout] x len(hidden) + softmax.

    `fit(X, y, X_val, y_val)` trains with early stopping on the validation rows (best weights
    restored) and sets `classes_`, `n_features_in_`, `model_`, `scaler_` and `history_`.
    """

    def __init__(
        self,
        hidden=(256,),
        dropout=0.5,
        epochs=30,
        learning_rate=1e-3,
        patience=5,
        scale="standard",
        batch_size=64,
        random_state=0,
    ):
        self.hidden = hidden
        self.dropout = dropout
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.patience = patience
        self.scale = scale
        self.batch_size = batch_size
        self.random_state = random_state

    def fit(self, X, y, X_val=None, y_val=None) -> DenseHead:
        """Train on (n, n_features) float X and (n,) int y; validation rows drive early stopping."""
        from sklearn.utils.validation import check_X_y

        keras = require("keras", extra=None)
        X, y = check_X_y(X, y, dtype=np.float32)
        self.classes_ = np.unique(y)
        self.n_features_in_ = X.shape[1]
        self.scaler_ = _scaler(self.scale)
        if self.scaler_ != "passthrough":
            X = self.scaler_.fit_transform(X).astype(np.float32)
        yi = np.searchsorted(self.classes_, y)
        keras.utils.set_random_seed(self.random_state)
        inputs = keras.Input((X.shape[1],))
        x = inputs
        for units in self.hidden:
            x = keras.layers.Dense(units, activation="relu")(x)
            x = keras.layers.Dropout(self.dropout)(x)
        outputs = keras.layers.Dense(len(self.classes_), activation="softmax")(x)
        model = keras.Model(inputs, outputs)
        model.compile(
            optimizer=keras.optimizers.Adam(self.learning_rate),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        callbacks, val = [], None
        if X_val is not None and len(X_val):
            Xv = self._transform(np.asarray(X_val, np.float32))
            val = (Xv, np.searchsorted(self.classes_, y_val))
            callbacks.append(
                keras.callbacks.EarlyStopping(
                    monitor="val_loss", patience=self.patience, restore_best_weights=True
                )
            )
        hist = model.fit(
            X,
            yi,
            validation_data=val,
            epochs=self.epochs,
            batch_size=self.batch_size,
            callbacks=callbacks,
            verbose=0,
        )
        self.model_ = model
        self.history_ = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
        return self

    def __getstate__(self) -> dict:
        """Pickle everything but the Keras network, which is saved as its own .keras file."""
        state = dict(self.__dict__)
        state.pop("model_", None)
        return state

    def _transform(self, X: np.ndarray) -> np.ndarray:
        return X if self.scaler_ == "passthrough" else self.scaler_.transform(X).astype(np.float32)

    def predict_proba(self, X) -> np.ndarray:
        """Return (n, n_classes) probabilities."""
        from sklearn.utils.validation import check_array, check_is_fitted

        check_is_fitted(self, "model_")
        X = self._transform(check_array(X, dtype=np.float32))
        proba = np.asarray(self.model_.predict(X, batch_size=1024, verbose=0), dtype=np.float64)
        return proba / proba.sum(axis=1, keepdims=True)  # float32 softmax sums to 1 +- 1e-7

    def predict(self, X) -> np.ndarray:
        """Return (n,) predicted labels."""
        return self.classes_[self.predict_proba(X).argmax(axis=1)]
