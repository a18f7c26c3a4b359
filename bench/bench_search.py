"""Benchmark `featstore search`: exact blockwise search against a FAISS index (IVF, inner product)
on cached features, latency per query and FAISS's recall@10 against exact, side by side in this
process on the same feature set.

Run: `python bench/bench_search.py [--n 100000] [--dim 1280] [--queries 100] [--sizes 10000,30000,100000]`

Features are synthetic `cnn` rows (non-negative, low rank plus noise, 50 clusters; see
bench_inspect.py), written to a temporary store as extract writes them. Queries are stored rows
with 3 % noise, so each has a true nearest neighbour. Exact search reads the set in blocks for
every batch of queries (what `search` does: no index to build or keep); FAISS builds its index
once (the time is printed; `search` keeps it in the store) and then answers from memory. The
size from which FAISS answers a batch of queries faster than exact search, build included once,
sets `FAISS_MIN_ROWS`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_inspect import synthetic, write_set  # noqa: E402


def run(n: int, dim: int, n_queries: int) -> dict:
    """Exact and FAISS search on one set of `n` rows; return the figures."""
    from featstore.inspect.faiss_index import faiss_search, index_path
    from featstore.inspect.search import exact_search
    from featstore.inspect.sets import normalise_rows, open_set
    from featstore.reporter import SILENT
    from featstore.store.layout import resolve_store

    X, labels, digests = synthetic(n, dim, "cnn")
    rng = np.random.default_rng(1)
    picks = rng.choice(n, n_queries, replace=False)
    q = normalise_rows((X[picks] * (1 + rng.normal(0, 0.03, (n_queries, dim)))).astype(np.float32))
    with tempfile.TemporaryDirectory() as tmp:
        layout = resolve_store(Path(tmp) / "store")
        write_set(layout.root, "bench@synthetic", X, labels, digests)
        del X
        data = open_set(layout, "bench@synthetic")
        t0 = time.perf_counter()
        exact_s, exact_i = exact_search(layout, data, q, 10)
        exact_t = time.perf_counter() - t0
        t0 = time.perf_counter()
        faiss_search(layout, data, q[:1], 10, SILENT)  # builds and keeps the index
        build_t = time.perf_counter() - t0
        size_mb = index_path(layout, data.name).stat().st_size / 1e6
        t0 = time.perf_counter()
        faiss_s, faiss_i = faiss_search(layout, data, q, 10, SILENT)  # loads the kept index
        faiss_t = time.perf_counter() - t0
        t0 = time.perf_counter()
        exact_search(layout, data, q[:1], 10)
        exact_one = time.perf_counter() - t0
        t0 = time.perf_counter()
        faiss_search(layout, data, q[:1], 10, SILENT)
        faiss_one = time.perf_counter() - t0
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact_i, faiss_i, strict=True)])
    top1 = np.mean(exact_i[:, 0] == faiss_i[:, 0])
    return {
        "n": n,
        "exact_ms_per_query": 1000 * exact_t / n_queries,
        "exact_batch_s": exact_t,
        "faiss_build_s": build_t,
        "faiss_batch_s": faiss_t,
        "faiss_ms_per_query": 1000 * faiss_t / n_queries,
        "index_mb": size_mb,
        "exact_one_s": exact_one,
        "faiss_one_s": faiss_one,
        "recall_at_10": float(recall),
        "top1_agrees": float(top1),
    }


def main() -> None:
    """Print one row per set size."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dim", type=int, default=1280)
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("--sizes", default="10000,30000,100000")
    args = p.parse_args()
    print(
        f"{'rows':>8} {'exact ms/q':>10} {'exact batch s':>13} {'faiss build s':>13} {'faiss batch s':>13} "
        f"{'faiss ms/q':>10} {'ratio exact/faiss':>17} {'recall@10':>9} {'top-1 same':>10} "
        f"{'1 query: exact s':>16} {'faiss s':>7}"
    )
    for n in (int(s) for s in args.sizes.split(",")):
        r = run(n, args.dim, args.queries)
        print(
            f"{r['n']:>8} {r['exact_ms_per_query']:>10.2f} {r['exact_batch_s']:>13.2f} {r['faiss_build_s']:>13.2f} "
            f"{r['faiss_batch_s']:>13.3f} {r['faiss_ms_per_query']:>10.3f} "
            f"{r['exact_ms_per_query'] / r['faiss_ms_per_query']:>17.1f} {r['recall_at_10']:>9.3f} {r['top1_agrees']:>10.2f} "
            f"{r['exact_one_s']:>16.3f} {r['faiss_one_s']:>7.3f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
