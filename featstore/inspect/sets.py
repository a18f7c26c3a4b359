"""The rows an inspection looks at (view 0 of one feature set) and their unit vectors, in chunks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from featstore.errors import DatasetError
from featstore.store.layout import StoreLayout
from featstore.store.shards import open_feature_set

#: Rows read from the file per chunk when loading features (bounded extra memory).
CHUNK_ROWS = 8192


@dataclass
class InspectSet:
    """The plain rows of feature set `name`: `index` (n,) their row numbers in the file, with
    `paths`, `digests`, `split` ("" when none) and `labels` ((n,) int32, -1 unlabelled);
    `backbone_digest` and `n_features` identify the features' space."""

    name: str
    index: np.ndarray
    paths: list[str]
    digests: list[str]
    split: list[str]
    labels: np.ndarray
    class_names: list[str]
    backbone: str | None
    backbone_digest: str | None
    n_features: int

    def __len__(self) -> int:
        return len(self.index)

    @property
    def dataset(self) -> str:
        """The dataset part of the name (`dataset@backbone`)."""
        return self.name.split("@", 1)[0]

    def label_name(self, i: int) -> str | None:
        """Class name of row i (None when unlabelled)."""
        y = int(self.labels[i])
        return self.class_names[y] if 0 <= y < len(self.class_names) else None

    def subset(self, rows: np.ndarray) -> InspectSet:
        """The same set restricted to positions `rows` (in this set's order)."""
        rows = np.asarray(rows, dtype=np.int64)
        return InspectSet(
            self.name,
            self.index[rows],
            [self.paths[i] for i in rows],
            [self.digests[i] for i in rows],
            [self.split[i] for i in rows],
            self.labels[rows],
            self.class_names,
            self.backbone,
            self.backbone_digest,
            self.n_features,
        )


def open_set(layout: StoreLayout, name: str) -> InspectSet:
    """Read the row metadata of feature set `name`; UnknownFeatureSetError when it does not exist,
    DatasetError when it holds no image."""
    with open_feature_set(layout, name) as reader:
        rows = reader.rows()
        attrs = reader.attrs
        n_features = reader.n_features
        class_names = reader.class_names
    plain = np.flatnonzero(np.asarray(rows.view) == 0)
    if not len(plain):
        raise DatasetError(
            f"feature set {name} holds no images; run featstore extract on a folder with images first"
        )
    return InspectSet(
        name=name,
        index=plain.astype(np.int64),
        paths=[rows.paths[i] for i in plain],
        digests=[rows.digests[i] for i in plain],
        split=[rows.split[i] for i in plain],
        labels=np.asarray(rows.labels, dtype=np.int32)[plain],
        class_names=list(class_names),
        backbone=attrs.get("backbone"),
        backbone_digest=attrs.get("backbone_digest"),
        n_features=n_features,
    )


def raw_features(layout: StoreLayout, data: InspectSet, chunk_rows: int = CHUNK_ROWS) -> np.ndarray:
    """The features of `data`'s rows as float32 (n, n_features), read `chunk_rows` at a time into
    one array; DatasetError for NaN or infinite values."""
    out = np.empty((len(data), data.n_features), dtype=np.float32)
    order = np.argsort(data.index, kind="stable")
    want = data.index[order]
    with open_feature_set(layout, data.name) as reader:
        for start, block in _chunks(reader, chunk_rows):
            lo = np.searchsorted(want, start)
            hi = np.searchsorted(want, start + len(block))
            if hi > lo:
                out[order[lo:hi]] = block[want[lo:hi] - start]
    bad = np.concatenate(
        [~np.isfinite(out[s : s + chunk_rows]).all(axis=1) for s in range(0, len(out), chunk_rows)]
        or [np.zeros(0, bool)]
    )  # chunk by chunk: no (n, d) mask
    if bad.any():
        first = data.paths[int(np.argmax(bad))]
        raise DatasetError(
            f"feature set {data.name} has NaN or infinite features in {int(bad.sum())} rows "
            f"(e.g. {first}); re-extract it with --force"
        )
    return out


def unit_features(layout: StoreLayout, data: InspectSet, chunk_rows: int = CHUNK_ROWS) -> np.ndarray:
    """`raw_features` with each row scaled to unit length in place (zero rows stay zero)."""
    return normalise_rows(raw_features(layout, data, chunk_rows), chunk_rows)


def _chunks(reader, chunk_rows: int):
    start = 0
    for block in reader.iter_features(chunk_rows):
        yield start, block
        start += len(block)


def normalise_rows(X: np.ndarray, chunk_rows: int = CHUNK_ROWS) -> np.ndarray:
    """Scale each row of float array `X` to unit length in place (zero rows stay zero); return X."""
    for start in range(0, len(X), chunk_rows):
        block = X[start : start + chunk_rows]
        norms = np.sqrt(np.einsum("ij,ij->i", block, block, dtype=np.float64)).astype(X.dtype)
        norms[norms == 0] = 1
        block /= norms[:, None]
    return X
