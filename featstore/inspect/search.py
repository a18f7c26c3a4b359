"""`featstore search`: the stored images most like query images, by cosine of their features.

A query already in the feature set (same content digest) takes its stored features; any other
is decoded as the set's images were and run through the set's backbone (the same export and
precision). The set is compared exactly, a block of rows at a time (bounded memory), or through
a FAISS index (`faiss_index`) for large sets.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from featstore.data.decode import ImageDecodeError, decode_image
from featstore.errors import DatasetError, StoreError
from featstore.inference.options import InferenceOptions
from featstore.inspect.options import FAISS_MIN_ROWS, SearchOptions
from featstore.inspect.sets import CHUNK_ROWS, InspectSet, normalise_rows, open_set
from featstore.options import Record
from featstore.reporter import SILENT, Reporter
from featstore.store.layout import StoreLayout, resolve_store
from featstore.store.shards import open_feature_set

COLUMNS = ["query", "rank", "similarity", "label", "split", "path"]


@dataclass
class SearchResult(Record):
    """The answer of one search: per query (`path`, `digest`, `in_set`: its features were
    stored) its `matches` (rank, similarity, label, split, path relative to `root`, digest),
    most similar first; the `method` used, rows compared and `seconds`."""

    feature_set: str
    root: str | None
    method: str
    k: int
    n_rows: int
    queries: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    def rows(self) -> list[dict]:
        """One row per (query, match), the keys of `COLUMNS` plus the digests."""
        return [
            {"query": q["path"], **m, "query_digest": q["digest"]} for q in self.queries for m in q["matches"]
        ]


def search(
    features: str,
    images: Sequence[str | os.PathLike],
    options: SearchOptions = SearchOptions(),
    *,
    inference: InferenceOptions = InferenceOptions(),
    store: StoreLayout | str | None = None,
    reporter: Reporter = SILENT,
) -> SearchResult:
    """The `options.k` images of feature set `features` most similar to each query image.

    Returns
    -------
    SearchResult
        Per query its matches, most similar first (cosine of the features, in [-1, 1]).

    Raises
    ------
    InvalidOptionError
        k below 1, an unknown method, FAISS asked for and not installed.
    DatasetError
        A query that is not a readable image; no query.
    UnknownFeatureSetError, StoreError
        No such set; its backbone's ONNX file is missing (re-run the extract that made it).
    """
    opts = options.check()
    if not images:
        raise DatasetError("give at least one query image")
    layout = resolve_store(store)
    t0 = time.perf_counter()
    data = open_set(layout, features)
    with open_feature_set(layout, features) as reader:
        attrs = dict(reader.attrs)
    queries = [_read_query(Path(p)) for p in images]
    by_digest = first_rows(data)
    q = _query_features(layout, data, by_digest, attrs, queries, inference, reporter)
    method = _method(opts, len(data))
    if method == "faiss":
        from featstore.inspect.faiss_index import faiss_search

        sims, rows = faiss_search(layout, data, q, opts.k, reporter)
    else:
        sims, rows = exact_search(layout, data, q, opts.k)
    result = SearchResult(features, attrs.get("data_root"), method, opts.k, len(data))
    for (path, digest, _), row_sims, row_idx in zip(queries, sims, rows, strict=True):
        matches = [
            {
                "rank": r + 1,
                "similarity": round(float(s), 6),
                "label": data.label_name(int(i)),
                "split": data.split[int(i)] or None,
                "path": data.paths[int(i)],
                "digest": data.digests[int(i)],
            }
            for r, (s, i) in enumerate(zip(row_sims, row_idx, strict=True))
            if i >= 0
        ]
        in_set = digest in by_digest
        result.queries.append({"path": str(path), "digest": digest, "in_set": in_set, "matches": matches})
    result.seconds = round(time.perf_counter() - t0, 3)
    return result


def _method(opts: SearchOptions, n_rows: int) -> str:
    if opts.method != "auto":
        if opts.method == "faiss":
            from featstore.deps import require

            require("faiss", "search", "faiss-cpu")
        return opts.method
    if n_rows < FAISS_MIN_ROWS:
        return "exact"
    from featstore.deps import available

    return "faiss" if available("faiss") else "exact"


def first_rows(data: InspectSet) -> dict[str, int]:
    """Content digest -> position of its first row in `data`."""
    out: dict[str, int] = {}
    for i, d in enumerate(data.digests):
        out.setdefault(d, i)
    return out


def _read_query(path: Path) -> tuple[Path, str, bytes]:
    try:
        raw = path.expanduser().read_bytes()
    except OSError as err:
        raise DatasetError(f"cannot read query image {path}: {err.strerror or err}") from err
    return path, hashlib.sha256(raw).hexdigest(), raw


def _query_features(
    layout, data: InspectSet, by_digest, attrs: dict, queries, inference, reporter
) -> np.ndarray:
    """Unit features (m, d) float32 of the queries: stored rows where the set has their digest
    (`by_digest`, see `first_rows`), else computed with the set's backbone."""
    out = np.zeros((len(queries), data.n_features), dtype=np.float32)
    stored = [(j, data.index[by_digest[d]]) for j, (_, d, _) in enumerate(queries) if d in by_digest]
    if stored:
        with open_feature_set(layout, data.name) as reader:
            rows = reader.read_features(np.asarray([row for _, row in stored]))
        out[[j for j, _ in stored]] = rows
    todo = [j for j, (_, d, _) in enumerate(queries) if d not in by_digest]
    if todo:
        size, resize = int(attrs["input_size"]), attrs.get("resize") or "squash"
        pixels = []
        for j in todo:
            path, _, raw = queries[j]
            try:
                pixels.append(decode_image(raw, size, resize))
            except ImageDecodeError as err:
                raise DatasetError(f"query {path}: {err}") from err
        session = _session(layout, attrs, inference)
        reporter.log(f"computing the features of {len(todo)} query image(s) with {attrs.get('backbone')}")
        out[todo] = session.run(np.stack(pixels))
    if not np.isfinite(out).all():
        raise DatasetError("a query's features are NaN or infinite")
    return normalise_rows(out)


def _session(layout: StoreLayout, attrs: dict, inference: InferenceOptions):
    """A session of the model that made the set's features (its export, or its int8/fp16 variant)."""
    from featstore.backbones.export import find_backbone_by_digest
    from featstore.inference.devices import default_threads
    from featstore.inference.runtimes import Target
    from featstore.inference.variants import find_variant

    digest = str(attrs.get("backbone_digest"))
    found = find_backbone_by_digest(layout, digest)
    variant = None if found is not None else find_variant(layout, digest)
    if found is None and variant is None:
        raise StoreError(
            f"the backbone of {attrs.get('backbone')} (digest {digest[:12]}) is missing from "
            f"{layout.backbones}; run the featstore extract that made the set again to re-export it"
        )
    precision = variant.precision if variant is not None else "fp32"
    target = Target(inference.device, inference.runtime, precision, inference.n_threads)
    runtime = target.runtime_of(variant) if variant is not None else target.runtime
    path = variant.path if variant is not None else found.path
    settings = variant.settings if variant is not None else {}
    threads = inference.n_threads or default_threads()
    return runtime.open(path, target.device, threads, precision=precision, settings=settings)


def exact_search(
    layout: StoreLayout, data: InspectSet, q: np.ndarray, k: int, chunk_rows: int = CHUNK_ROWS
) -> tuple[np.ndarray, np.ndarray]:
    """The `k` rows of `data` with the highest cosine to each unit query of `q` (m, d), reading
    the set `chunk_rows` at a time: (similarities (m, k) float32, positions in `data` (m, k),
    -1 where the set has fewer rows). Rows with NaN features never match."""
    m = len(q)
    best_s = np.full((m, 0), -np.inf, dtype=np.float32)
    best_i = np.full((m, 0), -1, dtype=np.int64)
    with open_feature_set(layout, data.name) as reader:
        start = 0
        for block in reader.iter_features(chunk_rows):
            lo, hi = np.searchsorted(data.index, [start, start + len(block)])
            if hi > lo:
                B = np.asarray(block[data.index[lo:hi] - start], dtype=np.float32)
                S = q @ normalise_rows(B).T
                S[:, ~np.isfinite(B).all(axis=1)] = -np.inf
                best_s = np.hstack([best_s, S])
                best_i = np.hstack([best_i, np.broadcast_to(np.arange(lo, hi), S.shape)])
                if best_s.shape[1] > k:
                    top = np.argpartition(-best_s, k - 1, axis=1)[:, :k]
                    best_s = np.take_along_axis(best_s, top, 1)
                    best_i = np.take_along_axis(best_i, top, 1)
            start += len(block)
    order = np.argsort(-best_s, axis=1, kind="stable")
    sims, idx = np.take_along_axis(best_s, order, 1), np.take_along_axis(best_i, order, 1)
    idx[~np.isfinite(sims)] = -1
    return sims, idx
