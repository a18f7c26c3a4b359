"""A FAISS index over a feature set's unit rows (inverted lists, inner product = cosine), built
on first use and kept in `store/indexes/<set>.faiss` until the set file changes. Needs
`faiss-cpu` (`pip install "featstore[search]"`)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from featstore.deps import require
from featstore.files import new_temp, write_json
from featstore.inspect.sets import InspectSet, unit_features
from featstore.reporter import Reporter
from featstore.store.layout import StoreLayout
from featstore.store.shards import set_stamp

#: Lists scanned per query (of about sqrt(rows)): recall@10 against exact search is printed by
#: bench/bench_search.py.
NPROBE = 16
#: Training rows per list (FAISS wants at least 39).
TRAIN_PER_LIST = 64
INDEX_VERSION = 1


def index_path(layout: StoreLayout, name: str) -> Path:
    """Where the index of feature set `name` is kept."""
    return layout.root / "indexes" / f"{name}.faiss"


def _stamp(layout: StoreLayout, data: InspectSet) -> dict:
    return {**set_stamp(layout.feature_set(data.name)), "n_rows": len(data), "version": INDEX_VERSION}


def load_or_build(layout: StoreLayout, data: InspectSet, reporter: Reporter):
    """The index of `data` (rows in `data`'s order): the kept one when the set file is unchanged,
    else built now (k-means on a sample, then every row added) and kept."""
    faiss = require("faiss", "search", "faiss-cpu")
    path = index_path(layout, data.name)
    meta = path.with_suffix(".json")
    stamp = _stamp(layout, data)
    if path.is_file() and meta.is_file():
        try:
            if json.loads(meta.read_text()) == stamp:  # mapped: a query reads only its lists
                return faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
        except (OSError, ValueError, RuntimeError):
            pass
    X = unit_features(layout, data)
    n, d = X.shape
    n_lists = max(1, min(int(math.sqrt(n)), n // TRAIN_PER_LIST))
    reporter.log(f"building a FAISS index of {n} rows ({n_lists} lists; once, kept in {path.parent})")
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quantizer, d, n_lists, faiss.METRIC_INNER_PRODUCT)
    sample = np.random.default_rng(0).choice(n, min(n, n_lists * TRAIN_PER_LIST), replace=False)
    index.train(np.ascontiguousarray(X[np.sort(sample)]))
    index.add(X)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = new_temp(path.parent, path.name)
    try:
        faiss.write_index(index, str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    write_json(meta, stamp)
    return index


def faiss_search(
    layout: StoreLayout, data: InspectSet, q: np.ndarray, k: int, reporter: Reporter
) -> tuple[np.ndarray, np.ndarray]:
    """Approximate top `k` of each unit query (m, d): (similarities (m, k), positions in `data`,
    -1 where fewer were found), as `exact_search` returns them."""
    index = load_or_build(layout, data, reporter)
    index.nprobe = min(NPROBE, index.nlist)
    sims, idx = index.search(np.ascontiguousarray(q, dtype=np.float32), k)
    return sims.astype(np.float32), idx.astype(np.int64)
