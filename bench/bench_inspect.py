"""Benchmark `featstore inspect duplicates`: exact near-duplicate search on cached features, its
seconds and peak memory at 100,000 x 1,280, and the ratio against the obvious alternatives.

Run: `python bench/bench_inspect.py [--n 100000] [--dim 1280] [--compare-n 15000] [--kind cnn]`
(`--quick`: 20,000 rows, compare at 5,000; `--no-sklearn-full`: skip scikit-learn at full size).

Features are synthetic (no data set of 100,000 images ships with the project): `cnn` rows are
non-negative, low-rank plus noise, like pooled CNN features (their pairwise cosine quantiles are
printed: MobileNetV2 ImageNet features of the flowers photos give about 0.48 / 0.62 / 0.80 /
0.89 at 1 % / 50 % / 99 % / 99.99 %); `gaussian` rows are isotropic noise (no low-rank
structure, the hard case for the projection). Planted: 0.5 % near copies (cosine about 0.999)
and 0.2 % identical files (one content digest at two paths).

Sections:
1. Side by side in this process, on the same unit rows (`--compare-n` of them): featstore's
   search (`featstore.inspect.similarity.iter_pairs`), the full similarity matrix (`X @ X.T`,
   upper triangle, threshold) and scikit-learn `NearestNeighbors(radius=1 - t, metric="cosine",
   algorithm="brute").radius_neighbors`; every method must find the same pairs.
2. End to end at `--n` rows: `featstore.inspect.find_duplicates` on a feature set written to a
   temporary store (read, search, cluster, write the result), in a fresh subprocess whose peak
   RSS is read from /proc/self/status (VmHWM); the same for scikit-learn's radius search on the
   same file's distinct images (one row per content digest, as featstore searches) unless
   `--no-sklearn-full`. Targets: under 60 s and under 1 GiB.

`bg load` is the share of all cores other processes used meanwhile (/proc/stat); when it is
high, rerun before trusting a figure. Results also go to bench/results/inspect.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "inspect.json"
TARGET_S = 60.0
TARGET_MB = 1024.0


def log(msg: str) -> None:
    """Print a timestamped progress line to stderr."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- data


def synthetic(n: int, d: int, kind: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(features (n, d) float32, labels (n,), digests): planted near copies and identical files."""
    rng = np.random.default_rng(seed)
    X = np.empty((n, d), np.float32)
    labels = rng.integers(0, 50, n)
    if kind == "cnn":
        rank = 64
        W = rng.normal(0, 0.12, (rank, d)).astype(np.float32)
        bias = rng.gamma(2.0, 0.5, d).astype(np.float32)
        centres = rng.normal(0, 1, (50, rank)).astype(np.float32)
    for s in range(0, n, 8192):
        m = min(8192, n - s)
        if kind == "cnn":
            z = centres[labels[s : s + m]] + rng.normal(0, 1, (m, rank)).astype(np.float32)
            X[s : s + m] = np.maximum(z @ W + bias + rng.normal(0, 0.25, (m, d)).astype(np.float32), 0)
        else:
            X[s : s + m] = rng.normal(0, 1, (m, d))
    digests = [f"{i:064x}" for i in range(n)]
    rows = rng.permutation(n)
    near, same = rows[: n // 200], rows[n // 200 : n // 200 + n // 500]
    src = rng.integers(0, n, len(near) + len(same))
    X[near] = X[src[: len(near)]] * (1 + rng.normal(0, 0.03, (len(near), d))).astype(np.float32)
    for row, s in zip(same, src[len(near) :], strict=True):
        X[row], digests[row] = X[s], digests[s]
    return X, labels, digests


def write_set(store: Path, name: str, X: np.ndarray, labels: np.ndarray, digests: list[str]) -> Path:
    """Write a real feature set file of the store (as extract would), features copied in chunks."""
    import h5py

    from featstore.store.featuresets import FeatureRows, write_feature_set
    from featstore.store.layout import resolve_store
    from featstore.store.parts import FeatureSource

    layout = resolve_store(store)
    layout.features.mkdir(parents=True, exist_ok=True)
    n, d = X.shape
    keys = [f"{i}" for i in range(n)]
    rows = FeatureRows(
        paths=[f"c{y}/{i}.jpg" for i, y in enumerate(labels)],
        labels=np.asarray(labels),
        digests=digests,
        split=[""] * n,
    )
    src = layout.root / ".src.h5"
    with h5py.File(src, "w") as f:
        f["features"] = X
    source = FeatureSource()
    source.add_path(src, keys)
    attrs = {
        "class_names": [f"c{i}" for i in range(50)],
        "backbone": "synthetic",
        "backbone_digest": "s" * 64,
    }
    attrs["dataset"] = name.split("@")[0]
    write_feature_set(layout.feature_set(name), rows, source, d, "float32", attrs, keys=keys)
    source.close()
    src.unlink()
    return layout.feature_set(name)


# ---------------------------------------------------------------- machine


def cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of all cores from /proc/stat."""
    with open("/proc/stat") as f:
        values = [float(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


class Load:
    """The share of all cores that other processes used between start and `share()`."""

    def __init__(self) -> None:
        self.busy0, self.total0 = cpu_times()
        self.own0 = os.times()

    def share(self, own_s: float | None = None) -> float:
        busy, total = cpu_times()
        hz = os.sysconf("SC_CLK_TCK")
        t = os.times()
        own = (
            own_s
            if own_s is not None
            else (t.user + t.system + t.children_user + t.children_system)
            - (self.own0.user + self.own0.system + self.own0.children_user + self.own0.children_system)
        )
        other = (busy - self.busy0) / hz - own
        return max(0.0, other / max((total - self.total0) / hz, 1e-9))


def header() -> dict:
    import sklearn

    model = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
        "?",
    )
    mem = next((line.split()[1] for line in open("/proc/meminfo") if line.startswith("MemTotal")), "0")
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "memory_gb": round(int(mem) / 2**20, 1),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "blas": _blas(),
    }


def _blas() -> str:
    try:
        info = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{info.get('name')} {info.get('version')}"
    except Exception:  # noqa: BLE001 - older numpy: not reported
        return "?"


# ---------------------------------------------------------------- section 1


def pairs_featstore(X: np.ndarray, t: float) -> set:
    from featstore.inspect.similarity import iter_pairs

    out = set()
    for i, j, _ in iter_pairs(X, None, t):
        out.update(zip(i.tolist(), j.tolist(), strict=True))
    return out


def pairs_full_matrix(X: np.ndarray, t: float) -> set:
    S = X @ X.T
    i, j = np.nonzero(np.triu(S, 1) >= t)
    return set(zip(i.tolist(), j.tolist(), strict=True))


def pairs_sklearn(X: np.ndarray, t: float) -> set:
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(radius=1 - t, metric="cosine", algorithm="brute", n_jobs=2).fit(X)
    out = set()
    for i, js in enumerate(nn.radius_neighbors(X, return_distance=False)):
        out.update((i, int(j)) for j in js if j > i)
    return out


def side_by_side(X: np.ndarray, t: float) -> list[dict]:
    """Time each method on the same rows; check they agree (up to float32 rounding at t)."""
    from featstore.inspect.sets import normalise_rows

    U = normalise_rows(X.copy())
    pairs_featstore(U[:2000], t)  # warm up imports and BLAS
    rows, reference = [], None
    for name, fn in (
        ("featstore", pairs_featstore),
        ("full matrix", pairs_full_matrix),
        ("sklearn radius", pairs_sklearn),
    ):
        load = Load()
        t0 = time.perf_counter()
        found = fn(U, t)
        seconds = time.perf_counter() - t0
        reference = found if reference is None else reference
        rows.append(
            {
                "method": name,
                "seconds": round(seconds, 2),
                "pairs": len(found),
                "same_pairs": len(found ^ reference) <= max(2, len(reference) // 1000),
                "bg_load": round(load.share(), 2),
            }
        )
        log(f"{name}: {seconds:.2f} s, {len(found)} pairs")
    return rows


# ---------------------------------------------------------------- section 2


def child(method: str, store: str, name: str, t: float) -> None:
    """In a fresh process: run one method on the feature set and print JSON (seconds, VmHWM)."""
    t0 = time.perf_counter()
    if method == "featstore":
        from featstore.inspect.duplicates import find_duplicates

        r = find_duplicates(name, store=store, emissions=False, threshold=t)
        extra = {k: r.summary[k] for k in ("n_pairs", "n_exact_groups", "n_near_clusters", "n_near_images")}
        extra["search"] = r.summary["search"]
    else:
        from featstore.inspect.sets import open_set, unit_features
        from featstore.store.layout import resolve_store

        layout = resolve_store(store)
        data = open_set(layout, name)
        _, first = np.unique(np.asarray(data.digests), return_index=True)  # distinct files, as featstore
        X = unit_features(layout, data.subset(np.sort(first)))
        extra = {"n_pairs": len(pairs_sklearn(X, t))}
    seconds = time.perf_counter() - t0
    hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
    print(json.dumps({"seconds": round(seconds, 2), "peak_mb": round(hwm / 1024, 1), **extra}))


def end_to_end(method: str, store: Path, name: str, t: float, timeout_s: float) -> dict:
    load = Load()
    cmd = [
        sys.executable,
        __file__,
        "--child",
        method,
        "--store",
        str(store),
        "--name",
        name,
        "--threshold",
        str(t),
    ]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=True)
    except subprocess.TimeoutExpired:
        return {"method": method, "seconds": None, "note": f"stopped after {timeout_s:.0f} s"}
    except subprocess.CalledProcessError as err:
        return {"method": method, "seconds": None, "note": err.stderr.strip().splitlines()[-1][:200]}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {"method": method, **result, "bg_load": round(load.share(), 2)}


# ---------------------------------------------------------------- main


def quantiles(X: np.ndarray) -> list[float]:
    from featstore.inspect.sets import normalise_rows

    U = normalise_rows(X[:3000].copy())
    s = (U @ U.T)[np.triu_indices(len(U), 1)]
    return [round(float(q), 3) for q in np.quantile(s, [0.01, 0.5, 0.99, 0.9999])]


def table(rows: list[dict], columns: list[str]) -> str:
    widths = [max(len(c), *(len(str(r.get(c))) for r in rows)) for c in columns]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(r.get(c)).ljust(w) for c, w in zip(columns, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=1280)
    p.add_argument("--compare-n", type=int, default=15_000)
    p.add_argument("--kind", choices=("cnn", "gaussian"), default="cnn")
    p.add_argument("--threshold", type=float, default=0.95)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--no-sklearn-full", action="store_true")
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--store", help=argparse.SUPPRESS)
    p.add_argument("--name", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child, args.store, args.name, args.threshold)
        return
    if args.quick:
        args.n, args.compare_n = 20_000, 5_000
    info = header()
    print(json.dumps(info))
    log(f"generating {args.n} x {args.dim} {args.kind} features")
    X, labels, digests = synthetic(args.n, args.dim, args.kind)
    q = quantiles(X)
    print(
        f"\n{args.kind} features: pairwise cosine at 1 / 50 / 99 / 99.99 %: {q}; threshold {args.threshold}"
    )

    print(f"\n1. Side by side in one process, {args.compare_n:,} x {args.dim} unit rows")
    rows = side_by_side(X[: args.compare_n], args.threshold)
    base = rows[0]["seconds"]
    for r in rows:
        r["x featstore"] = round(r["seconds"] / base, 1) if base else None
    print(table(rows, ["method", "seconds", "x featstore", "pairs", "same_pairs", "bg_load"]))

    print(f"\n2. End to end at {args.n:,} x {args.dim}, each in a fresh process")
    with tempfile.TemporaryDirectory(prefix="bench-inspect-") as tmp:
        store = Path(tmp) / "store"
        name = f"bench@{args.kind}"
        write_set(store, name, X, labels, digests)
        del X
        full = [end_to_end("featstore", store, name, args.threshold, args.timeout)]
        if not args.no_sklearn_full:
            full.append(end_to_end("sklearn", store, name, args.threshold, args.timeout))
    for r in full:
        seconds, peak = r.get("seconds"), r.get("peak_mb")
        r["target"] = (
            ("PASS" if seconds is not None and seconds < TARGET_S and peak < TARGET_MB else "MISS")
            if r["method"] == "featstore"
            else ""
        )
    if len(full) > 1 and full[0].get("seconds") and full[1].get("seconds"):
        full[1]["x featstore"] = round(full[1]["seconds"] / full[0]["seconds"], 1)
    print(
        table(full, ["method", "seconds", "peak_mb", "n_pairs", "x featstore", "bg_load", "target", "note"])
    )
    print(
        f"targets: featstore under {TARGET_S:.0f} s and {TARGET_MB:.0f} MB; search: {full[0].get('search')}"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {"machine": info, "args": vars(args), "quantiles": q, "side_by_side": rows, "end_to_end": full},
            indent=1,
        )
    )
    log(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
