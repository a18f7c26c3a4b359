"""The rows a head is trained on: feature sets joined row by row through the images' content
digests, the training rows of a split, and the sources a sweep or a few-shot run fits on (each
set alone, and all joined when they hold the same images, with one split per set of images)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from featstore.data.options import SplitOptions
from featstore.data.splits import Split, make_split, split_from_digests
from featstore.errors import DatasetError, InvalidOptionError
from featstore.reporter import Reporter
from featstore.store.layout import StoreLayout
from featstore.store.shards import open_feature_set


@dataclass
class TrainingData:
    """Features of the plain rows (view 0) of one or more joined feature sets, and their views.

    `X` (n, sum of n_features) float32, `labels` (n,) int (-1: unlabelled), `digests`,
    `paths` and `split` (stored part) per row; `aug_X`, `aug_labels` and `aug_digests` for the
    augmented views; `sources` describes each feature set (backbone, digest, precision, size).
    """

    X: np.ndarray
    labels: np.ndarray
    digests: list[str]
    paths: list[str]
    split: list[str]
    class_names: list[str]
    sources: list[dict]
    aug_X: np.ndarray
    aug_labels: np.ndarray
    aug_digests: list[str]
    n_dropped_in_join: int = 0

    @property
    def feature_sets(self) -> list[str]:
        """The names of the joined feature sets, in order."""
        return [s["feature_set"] for s in self.sources]


def _views(rows) -> np.ndarray:
    views = getattr(rows, "views", None)
    if views is None:
        views = getattr(rows, "view", None)
    return np.zeros(len(rows), np.int16) if views is None else np.asarray(views)


#: Features may take this share of the machine's memory: fitting holds about five times their
#: bytes at its peak (measured: 100 000 x 1 280 float32, 0.5 GB, peaked at 2.6 GB in logistic).
MEMORY_SHARE = 1 / 8


def memory_budget() -> int:
    """Bytes of features a head may read: `MEMORY_SHARE` of the machine's memory."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        total = 8 * 2**30
    return int(total * MEMORY_SHARE)


def sample_rows(rows, max_rows: int) -> np.ndarray:
    """Row indices of at most `max_rows` images (with their views), stratified by label: each
    class keeps its share, its images taken in content-digest order (the same ones every run,
    in every set of the same images)."""
    views = _views(rows)
    labels = np.asarray(rows.labels)
    plain = np.flatnonzero(views == 0)
    if len(plain) <= max_rows:
        return np.arange(len(rows))
    chosen: set[str] = set()
    classes, counts = np.unique(labels[plain], return_counts=True)
    for c, n_c in zip(classes.tolist(), counts.tolist(), strict=True):
        quota = max(1, round(max_rows * n_c / len(plain)))
        mine = sorted(rows.digests[i] for i in plain[labels[plain] == c])
        chosen.update(mine[:quota])
    return np.array([i for i, d in enumerate(rows.digests) if d in chosen], dtype=np.int64)


def _read(layout: StoreLayout, name: str, max_rows: int | None = None):
    with open_feature_set(layout, name) as r:
        rows = r.rows()
        if max_rows is not None and len(rows) > max_rows:
            idx = sample_rows(rows, max_rows)
            rows = rows.take(idx)
        else:
            idx = None
        n_bytes = len(rows) * r.n_features * 4
        if n_bytes > memory_budget():
            suggest = max(10, int(memory_budget() / (r.n_features * 4)) // 1000 * 1000)
            raise DatasetError(
                f"{name} holds {len(rows):,} rows x {r.n_features:,} features ({n_bytes / 1e9:.1f} GB), more than "
                f"a head reads into memory here ({memory_budget() / 1e9:.1f} GB, an eighth of this machine's): "
                f"pass --max-train-rows {suggest} to fit on a stratified sample, or fit a dense or logistic "
                "head on this one set, which reads its rows from the shards a block at a time (--stream)"
            )
        X = r.read_features(idx).astype(np.float32, copy=False)
        source, class_names = _source(name, r), r.class_names
    bad = ~np.isfinite(X).all(axis=1)
    if bad.any():
        raise DatasetError(
            f"feature set {name} has NaN or infinite features in {int(bad.sum())} rows "
            f"(e.g. {rows.paths[int(np.argmax(bad))]}); re-extract it with --force"
        )
    return rows, X, source, class_names


def _source(name: str, r) -> dict:
    """What a head records of the feature set `name` open in reader `r`."""
    a = r.attrs
    return {
        "feature_set": name,
        "backbone": a.get("backbone"),
        "backbone_digest": a.get("backbone_digest"),
        "precision": a.get("precision", "fp32"),
        "n_features": r.n_features,
        "input_size": a.get("input_size"),
        "input_width": a.get("input_width"),
        "resize": a.get("resize"),
        "data_root": a.get("data_root"),
        **({"views": list(a["views"])} if a.get("views") is not None else {}),
    }


def beyond_budget(layout: StoreLayout, names: list[str]) -> bool:
    """True when the float32 features of the sets `names` together exceed `memory_budget`
    (sizes read from their manifests, no feature)."""
    total = 0
    for name in names:
        with open_feature_set(layout, name) as r:
            total += len(r) * r.n_features * 4
    return total > memory_budget()


def open_stored(layout: StoreLayout, name: str) -> TrainingData:
    """The plain rows of feature set `name` with their features left in its shards (`X` is a
    `streaming.StoredFeatures`, read a block at a time; close it with `X.close()`). No augmented
    views. UnknownFeatureSetError for a missing set."""
    from featstore.heads.streaming import StoredFeatures

    r = open_feature_set(layout, name)
    try:
        rows = r.rows()
        plain = np.flatnonzero(_views(rows) == 0)
        rows = rows.take(plain) if len(plain) < len(rows) else rows
        source = _source(name, r)
    except BaseException:
        r.close()
        raise
    d = r.n_features
    return TrainingData(
        X=StoredFeatures(r, name, plain),
        labels=np.asarray(rows.labels),
        digests=list(rows.digests),
        paths=list(rows.paths),
        split=list(rows.split),
        class_names=r.class_names,
        sources=[source],
        aug_X=np.zeros((0, d), np.float32),
        aug_labels=np.zeros(0, np.int64),
        aug_digests=[],
    )


def load_for_scoring(layout: StoreLayout, names: list[str]) -> TrainingData:
    """The plain rows of feature sets `names` for scoring: in memory, or one set larger than
    `memory_budget` left in its shards (`open_stored`; close `X` after). Errors as
    `load_training_data`."""
    if len(names) == 1 and beyond_budget(layout, names):
        return open_stored(layout, names[0])
    return load_training_data(layout, names)


def close_features(data: TrainingData) -> None:
    """Close the shards of features left in them (`open_stored`); nothing for rows in memory."""
    close = getattr(data.X, "close", None)
    if close is not None:
        close()


def check_feature_sets(names: list[str]) -> None:
    """Raise InvalidOptionError when `names` is empty or lists a feature set twice."""
    if not names:
        raise InvalidOptionError("features", "give at least one feature set dataset@backbone")
    if len(set(names)) != len(names):
        raise InvalidOptionError("features", f"lists a feature set twice: {names}")


def _read_cached(layout: StoreLayout, name: str, cache: dict | None, max_rows: int | None = None):
    """`_read(layout, name, max_rows)`, kept in `cache` (a dict, or None for no cache)."""
    if cache is None:
        return _read(layout, name, max_rows)
    if name not in cache:
        cache[name] = _read(layout, name, max_rows)
    return cache[name]


def _joined_block(layout: StoreLayout, name: str, first: str, class_names, keys, cache=None, max_rows=None):
    """Columns of feature set `name` for the rows `keys` ((digest, view)), and which it has."""
    rows, X, source, classes = _read_cached(layout, name, cache, max_rows)
    if classes != class_names:
        raise DatasetError(
            f"{name} has classes {classes}, but {first} has {class_names}; join sets of one dataset"
        )
    where = {(d, int(v)): i for i, (d, v) in enumerate(zip(rows.digests, _views(rows), strict=True))}
    idx = np.array([where.get(k, -1) for k in keys])
    block = np.zeros((len(keys), X.shape[1]), np.float32)
    block[idx >= 0] = X[idx[idx >= 0]]
    return block, idx >= 0, source


def load_training_data(
    layout: StoreLayout, names: list[str], cache: dict | None = None, max_rows: int | None = None
) -> TrainingData:
    """Load feature sets `names`, joined by content digest (columns concatenated in order).

    `cache` (a dict) keeps each file's contents once read; `max_rows` reads a stratified sample
    of at most that many images of each set (`sample_rows`). InvalidOptionError for no set or
    one given twice; UnknownFeatureSetError or DatasetError for a missing set, NaN features,
    other classes than the first set's, no image in common, or a set larger than
    `memory_budget` without `max_rows`.
    """
    names = list(names)
    check_feature_sets(names)
    rows, X, source, class_names = _read_cached(layout, names[0], cache, max_rows)
    views = _views(rows)
    keys = [(d, int(v)) for d, v in zip(rows.digests, views, strict=True)]
    blocks, sources = [X], [source]
    keep = np.ones(len(keys), bool)
    for name in names[1:]:
        block, found, s2 = _joined_block(layout, name, names[0], class_names, keys, cache, max_rows)
        keep &= found
        blocks.append(block)
        sources.append(s2)
    if not keep.any():
        raise DatasetError(f"the feature sets {', '.join(names)} share no image (no common content digest)")
    Xall, labels = np.hstack(blocks)[keep], np.asarray(rows.labels)[keep]
    plain = views[keep] == 0
    digests = [d for d, k in zip(rows.digests, keep, strict=True) if k]
    return TrainingData(
        X=Xall[plain],
        labels=labels[plain],
        digests=[d for d, p in zip(digests, plain, strict=True) if p],
        paths=[p for p, k, v in zip(rows.paths, keep, views, strict=True) if k and v == 0],
        split=[s for s, k, v in zip(rows.split, keep, views, strict=True) if k and v == 0],
        class_names=class_names,
        sources=sources,
        aug_X=Xall[~plain],
        aug_labels=labels[~plain],
        aug_digests=[d for d, p in zip(digests, plain, strict=True) if not p],
        n_dropped_in_join=int((~keep).sum()),
    )


def training_rows(
    data: TrainingData, split: Split, use_augmented: bool
) -> tuple[np.ndarray, np.ndarray, int]:
    """The rows a head is fitted on: `(X (n, d) float32, y (n,) int, n_augmented)`, the split's
    training rows and with `use_augmented` their augmented views (InvalidOptionError when
    there are none)."""
    X, y = data.X[split.train], data.labels[split.train]
    if not use_augmented:
        return X, y, 0
    train_digests = {data.digests[i] for i in split.train}
    sel = np.array([d in train_digests for d in data.aug_digests], bool)
    if not sel.any():
        raise InvalidOptionError(
            "use_augmented",
            f"{data.feature_sets[0]} has no augmented views of training images; "
            "extract with --augment flip,rotate,zoom --copies N first",
        )
    return np.vstack([X, data.aug_X[sel]]), np.concatenate([y, data.aug_labels[sel]]), int(sel.sum())


@dataclass
class Source:
    """One feature-set combination: its label (`a@x` or `a@x+b@y`), rows, split and group (sources
    of the same images share a split and a choice)."""

    label: str
    data: TrainingData
    split: Split
    group: int


def load_sources(
    layout: StoreLayout, names: list[str], options: SplitOptions, reporter: Reporter, need_val: bool = True
) -> list[Source]:
    """Each feature set alone, and all joined when they hold the same images, each file read once;
    one split per set of images. With `need_val`, DatasetError for a split with no validation part."""
    check_feature_sets(names)
    cache: dict = {}
    datas = [(n, load_training_data(layout, [n], cache, options.max_rows)) for n in names]
    same = len(names) > 1 and all(set(d.digests) == set(datas[0][1].digests) for _, d in datas)
    if same:
        datas.append(("+".join(names), load_training_data(layout, names, cache, options.max_rows)))
    elif len(names) > 1:
        reporter.log(f"{', '.join(names)} do not hold the same images; each is swept alone, not joined")
    groups: dict[frozenset, tuple[int, Split, list[str]]] = {}
    out = []
    for label, data in datas:
        key = frozenset(data.digests)
        if key not in groups:
            split = make_split(data.labels, data.split, data.class_names, options, digests=data.digests)
            if split.note:
                reporter.log(f"{label}: {split.note}")
            if need_val and not len(split.val):
                raise DatasetError(
                    f"{label}: the split has no validation part, and a sweep chooses its settings on it; "
                    "give --val-size above 0 (or a val/ folder)"
                )
            groups[key] = (len(groups), split, data.digests)
        index, split, digests = groups[key]
        if data.digests is not digests:
            parts = {p: [digests[i] for i in getattr(split, p)] for p in ("train", "val", "test")}
            split = split_from_digests(parts, data.digests, split.describe())
        out.append(Source(label, data, split, index))
    return out
