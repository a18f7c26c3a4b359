"""Heads fitted on more rows than memory holds. The features stay in the set's shards and are read
a block at a time (`StoredFeatures`); the scaler is fitted in one pass over the training rows;
the dense head trains from a generator over the shards (`DenseHead.fit_batches`) and the
logistic head by minibatch gradient descent on the same blocks (`fit_logistic`; `fit_streamed`
makes of it the ordinary scikit-learn pipeline a fit in memory makes). Memory: the rows' labels, digests and paths, and a few blocks.

Each epoch visits the training rows in `BLOCK_ROWS` runs of file order, the runs in a random
order and shuffled within: sequential reads, and batches mixed across the whole set.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from featstore.errors import DatasetError, InvalidOptionError
from featstore.heads.params import make_scaler

#: Rows read from the shards at a time (1 280 float32 features: 40 MB).
BLOCK_ROWS = 8192
#: Passes over the training rows of the streamed logistic head (more for a small set: at least
#: `LOGISTIC_MIN_STEPS` minibatches in all), and its minibatch and step size.
LOGISTIC_EPOCHS = 4
LOGISTIC_MIN_STEPS = 2000
LOGISTIC_BATCH = 256
LOGISTIC_LEARNING_RATE = 1e-3
#: The kinds fitted by streaming.
KINDS = ("dense", "logistic")


class StoredFeatures:
    """The features of a stored set as a read-only (n_rows, n_features) float32 array that stays
    on disk (`rows`: the set rows it shows, default all): indexing with a slice, an index array
    or a boolean mask reads those rows from the shards; `blocks(rows)` reads them `BLOCK_ROWS`
    at a time. NaN or infinite features are a DatasetError naming the set."""

    ndim = 2
    dtype = np.dtype(np.float32)

    def __init__(self, reader, name: str, rows: np.ndarray | None = None):
        self.reader, self.name = reader, name
        self.rows = np.arange(len(reader)) if rows is None else np.asarray(rows, np.int64)
        self.shape = (len(self.rows), int(reader.n_features))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx) -> np.ndarray:
        X = self.reader.read_features(self.rows[idx]).astype(np.float32, copy=False)
        if not np.isfinite(X).all():
            raise DatasetError(
                f"feature set {self.name} has NaN or infinite features; re-extract it with --force"
            )
        return X

    def blocks(self, rows: np.ndarray) -> Iterator[tuple[slice, np.ndarray]]:
        """(slice of `rows`, their features) `BLOCK_ROWS` rows at a time, in the order given."""
        block_rows = BLOCK_ROWS
        for start in range(0, len(rows), block_rows):
            part = slice(start, start + block_rows)
            yield part, self[rows[part]]

    def close(self) -> None:
        """Close the set's files."""
        self.reader.close()


def peak_memory_gb() -> float:
    """This process's peak resident memory so far, in GB (10^9 bytes)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9, 2)


def shuffled_runs(rows: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """`rows` (set row indices) in file order cut into runs of `BLOCK_ROWS`, the runs in a random
    order and each shuffled: one epoch's visiting order."""
    block_rows = BLOCK_ROWS
    ordered = np.sort(rows)
    runs = [ordered[i : i + block_rows] for i in range(0, len(ordered), block_rows)]
    return [rng.permutation(runs[i]) for i in rng.permutation(len(runs))]


def fit_scaler(scale: str, X: StoredFeatures, rows: np.ndarray):
    """The scaler `scale` (see `make_scaler`) fitted on rows `rows` of `X` in one pass."""
    scaler = make_scaler(scale)
    if scaler == "passthrough":
        return scaler
    if hasattr(scaler, "partial_fit"):
        for _, block in X.blocks(rows):
            scaler.partial_fit(block)
        return scaler
    return scaler.fit(X[rows[:1]])  # stateless (l2)


def _scaled(scaler, block: np.ndarray) -> np.ndarray:
    return block if scaler == "passthrough" else scaler.transform(block).astype(np.float32, copy=False)


def check_streamable(kind: str, n_sets: int, use_augmented: bool, select: str) -> None:
    """InvalidOptionError for what a streamed fit does not do: kinds other than `KINDS`, joined
    sets, augmented views, cross-validated selection."""
    if kind not in KINDS:
        raise InvalidOptionError(
            "stream",
            f"fits {' and '.join(KINDS)} heads; for {kind} use --max-train-rows N (a stratified sample)",
        )
    if n_sets != 1:
        raise InvalidOptionError("stream", "reads one feature set; join sets with --max-train-rows instead")
    if use_augmented:
        raise InvalidOptionError("stream", "trains on the plain images; drop --use-augmented")
    if select == "cv":
        raise InvalidOptionError("stream", "scores on the validation images; drop --select cv")


# ---------------------------------------------------------------- dense


def read_run(X: StoredFeatures, run: np.ndarray, scaler) -> np.ndarray:
    """The scaled features of rows `run` (any order), read from the shards in file order."""
    order = np.argsort(run, kind="stable")
    block = np.empty((len(run), X.shape[1]), np.float32)
    block[order] = _scaled(scaler, X[run[order]])
    return block


def dense_batches(
    X: StoredFeatures, columns: np.ndarray, rows: np.ndarray, scaler, batch_size: int, seed=None
):
    """A Keras PyDataset of (scaled features, class column) batches of `batch_size` over rows
    `rows` of `X` (`columns`: every set row's class column): with `seed`, reshuffled every
    epoch as `shuffled_runs`; without, in order (validation). One block in memory at a time."""
    from featstore.heads.dense import _keras

    keras = _keras()

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=1, use_multiprocessing=False)
            self.rng = np.random.default_rng(seed)
            self.on_epoch_end()

        def on_epoch_end(self):
            if seed is None:
                self.runs = [rows[i : i + BLOCK_ROWS] for i in range(0, len(rows), BLOCK_ROWS)]
            else:
                self.runs = shuffled_runs(rows, self.rng)
            self.batches = [(k, s) for k, run in enumerate(self.runs) for s in range(0, len(run), batch_size)]
            self.loaded = (-1, None)

        def __len__(self):
            return len(self.batches)

        def __getitem__(self, i):
            k, start = self.batches[i]
            if self.loaded[0] != k:
                self.loaded = (k, read_run(X, self.runs[k], scaler))
            run, block = self.runs[k], self.loaded[1]
            return block[start : start + batch_size], columns[run[start : start + batch_size]]

    return Batches()


# ---------------------------------------------------------------- logistic


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def fit_logistic(params, X: StoredFeatures, columns: np.ndarray, n_classes: int, train, val, scaler):
    """A logistic head (`LogisticParams`) fitted on rows `train` of `X` (`columns`: every set
    row's class column; `scaler` fitted on the training rows) by Adam on minibatches of
    `LOGISTIC_BATCH`, `logistic_epochs` passes, minimising the mean cross-entropy plus
    |W|^2 / (2 C n) (scikit-learn's objective divided by C n). Every value of C is fitted on the
    same reads and the one with the lowest log loss on rows `val` kept (the first without any).
    Returns (C, coef (n_classes, d) float64, intercept (n_classes,) float64)."""
    from sklearn.utils.class_weight import compute_class_weight

    n, d, c = len(train), X.shape[1], n_classes
    Cs = np.asarray(params.C, np.float64)
    weight = np.ones(c, np.float32)
    if params.class_weight is not None:
        weight = compute_class_weight(params.class_weight, classes=np.arange(c), y=columns[train]).astype(
            np.float32
        )
    W, b = np.zeros((len(Cs), d, c), np.float32), np.zeros((len(Cs), 1, c), np.float32)
    moments = [np.zeros_like(W), np.zeros_like(W), np.zeros_like(b), np.zeros_like(b)]
    rng, step = np.random.default_rng(params.random_state), 0
    decay = (1.0 / (Cs * n)).astype(np.float32)[:, None, None]
    for _ in range(logistic_epochs(n)):
        for run in shuffled_runs(train, rng):
            block, cols = read_run(X, run, scaler), columns[run]
            for s in range(0, len(run), LOGISTIC_BATCH):
                xb, yb = block[s : s + LOGISTIC_BATCH], cols[s : s + LOGISTIC_BATCH]
                p = _softmax(xb @ W + b)  # (k, m, c): the gradient of the loss in the logits
                p[:, np.arange(len(yb)), yb] -= 1.0
                p *= weight[yb][None, :, None] / len(yb)
                step += 1
                _adam(W, np.matmul(xb.T, p) + decay * W, moments[0], moments[1], step)
                _adam(b, p.sum(axis=1, keepdims=True), moments[2], moments[3], step)
    best = _best_c(W, b, scaler, X, val, columns) if len(Cs) > 1 else 0
    return float(Cs[best]), W[best].T.astype(np.float64), b[best, 0].astype(np.float64)


def logistic_epochs(n_train: int) -> int:
    """Passes of the streamed logistic head over `n_train` rows: `LOGISTIC_EPOCHS`, or enough
    for `LOGISTIC_MIN_STEPS` minibatches."""
    return max(LOGISTIC_EPOCHS, -(-LOGISTIC_MIN_STEPS // -(-n_train // LOGISTIC_BATCH)))


def _adam(w: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray, t: int, b1=0.9, b2=0.999) -> None:
    m *= b1
    m += (1 - b1) * g
    v *= b2
    v += (1 - b2) * g * g
    w -= LOGISTIC_LEARNING_RATE * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + 1e-8)


def _best_c(W, b, scaler, X: StoredFeatures, val: np.ndarray, columns: np.ndarray) -> int:
    """Index of the C whose weights have the lowest log loss on rows `val` (0 without any)."""
    if not len(val):
        return 0
    loss = np.zeros(len(W))
    for part, block in X.blocks(val):
        p = _softmax(_scaled(scaler, block) @ W + b)
        truth = p[:, np.arange(len(block)), columns[val[part]]]
        loss -= np.log(np.clip(truth, 1e-15, 1)).sum(axis=1)
    return int(np.argmin(loss))


def fit_streamed(params, X: StoredFeatures, labels: np.ndarray, train: np.ndarray, val: np.ndarray):
    """A head of kind `params.kind` (one of `KINDS`) fitted on rows `train` of `X` read from the
    shards (`labels`: every row's), early stopping or choosing C on rows `val`: for logistic the
    pipeline (scaler, `LogisticRegression`) a fit in memory makes, for dense a `DenseHead`."""
    from featstore.heads.registry import get_head_kind

    classes = np.unique(labels[train])
    columns = np.searchsorted(classes, labels)  # labels of no training row are never read
    scaler = fit_scaler(params.scale, X, train)
    val = val[np.isin(labels[val], classes)]
    if params.kind == "logistic":
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import Pipeline

        C, coef, intercept = fit_logistic(params, X, columns, len(classes), train, val, scaler)
        clf = LogisticRegression(C=C, class_weight=params.class_weight, random_state=params.random_state)
        if len(classes) == 2:  # scikit-learn's binary form: one row, the second class against the first
            coef, intercept = coef[1:] - coef[:1], intercept[1:] - intercept[:1]
        clf.coef_, clf.intercept_, clf.classes_, clf.n_features_in_ = coef, intercept, classes, X.shape[1]
        clf.n_iter_ = np.array([logistic_epochs(len(train))])
        return Pipeline([("scale", scaler), ("clf", clf)])
    head = get_head_kind("dense").build(params, None)
    batches = dense_batches(X, columns, train, scaler, head.batch_size, seed=params.random_state or 0)
    val_batches = dense_batches(X, columns, val, scaler, 1024) if len(val) else None
    return head.fit_batches(batches, val_batches, classes, labels[train], scaler, X.shape[1])
