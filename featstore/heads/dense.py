"""The dense head: a small Keras network on features with scikit-learn's estimator API, its network
kept beside the pickle as `model.keras` (`save_files`, `load_files`)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from featstore.deps import require
from featstore.heads.params import make_scaler

#: The Keras network's file in the head's folder.
KERAS_FILE = "model.keras"


def _keras():
    """Keras, with TensorFlow's Python warnings (a predict function retraced when a sweep fits
    several networks) kept off stderr."""
    keras = require("keras", extra=None)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    return keras


class DenseHead(ClassifierMixin, BaseEstimator):
    """A small Keras network on features: [Dense(h, relu) + Dropout] x len(hidden) + softmax.

    `fit(X, y, X_val, y_val)` trains with early stopping on the validation rows (best weights
    restored) and sets `classes_`, `n_features_in_`, `model_`, `scaler_` and `history_`.
    `class_weight` `balanced` weighs each class's loss by n_rows / (n_classes x its rows).
    """

    class_weight = None  # heads pickled before class weights existed read as unweighted

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
        class_weight=None,
    ):
        self.hidden = hidden
        self.dropout = dropout
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.patience = patience
        self.scale = scale
        self.batch_size = batch_size
        self.random_state = random_state
        self.class_weight = class_weight

    def _network(self, keras, n_features: int, n_classes: int):
        inputs = keras.Input((n_features,))
        x = inputs
        for units in self.hidden:
            x = keras.layers.Dense(units, activation="relu")(x)
            x = keras.layers.Dropout(self.dropout)(x)
        outputs = keras.layers.Dense(n_classes, activation="softmax")(x)
        model = keras.Model(inputs, outputs)
        model.compile(
            optimizer=keras.optimizers.Adam(self.learning_rate),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        return model

    def fit(self, X, y, X_val=None, y_val=None) -> DenseHead:
        """Train on (n, n_features) float X and (n,) int y; validation rows drive early stopping."""
        from sklearn.utils.validation import check_X_y

        X, y = check_X_y(X, y, dtype=np.float32)
        self.classes_ = np.unique(y)
        self.n_features_in_ = X.shape[1]
        self.scaler_ = make_scaler(self.scale)
        if self.scaler_ != "passthrough":
            X = self.scaler_.fit_transform(X).astype(np.float32)
        val = None
        if X_val is not None and len(X_val):
            val = (self._transform(np.asarray(X_val, np.float32)), np.searchsorted(self.classes_, y_val))
        return self._train(X, np.searchsorted(self.classes_, y), val, self._weights(y), self.batch_size)

    def fit_batches(self, batches, val_batches, classes: np.ndarray, y: np.ndarray, scaler, n_features: int):
        """Train from `batches`, a Keras PyDataset of (scaled features, class column) batches
        (`heads.streaming.dense_batches`: rows read from the shards), with early stopping on
        `val_batches` (one too, or None); `classes` the sorted labels, `y` the training labels
        (for class weights), `scaler` fitted on the training rows already."""
        self.classes_, self.n_features_in_, self.scaler_ = np.asarray(classes), n_features, scaler
        return self._train(batches, None, val_batches, self._weights(y), None)

    def _train(self, x, y, val, class_weight, batch_size) -> DenseHead:
        keras = _keras()
        keras.utils.set_random_seed(self.random_state)
        model = self._network(keras, self.n_features_in_, len(self.classes_))
        callbacks = []
        if val is not None:
            callbacks.append(
                keras.callbacks.EarlyStopping(
                    monitor="val_loss", patience=self.patience, restore_best_weights=True
                )
            )
        hist = model.fit(
            x,
            y,
            validation_data=val,
            epochs=self.epochs,
            batch_size=batch_size,
            callbacks=callbacks,
            class_weight=class_weight,
            verbose=0,
        )
        self.model_ = model
        self.history_ = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
        return self

    def _weights(self, y: np.ndarray) -> dict[int, float] | None:
        """Keras' class weights (by column) of `class_weight` on labels `y`, or None."""
        if self.class_weight is None:
            return None
        from sklearn.utils.class_weight import compute_class_weight

        weights = compute_class_weight(self.class_weight, classes=self.classes_, y=y)
        return {i: float(w) for i, w in enumerate(weights)}

    def __getstate__(self) -> dict:
        """Pickle everything but the Keras network, which is saved as its own .keras file."""
        state = dict(self.__dict__)
        state.pop("model_", None)
        return state

    def save_files(self, folder: Path) -> list[str]:
        """Write the Keras network into `folder`; return the names of the files written."""
        self.model_.save(Path(folder) / KERAS_FILE)
        return [KERAS_FILE]

    def load_files(self, folder: Path) -> None:
        """Load the Keras network `save_files` wrote into `folder`."""
        # safe mode: a Lambda layer (Python code in the file) is refused, never run
        self.model_ = _keras().models.load_model(Path(folder) / KERAS_FILE, compile=False, safe_mode=True)

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
