"""Benchmark featstore heads on flowers: test accuracy and fit seconds of every head, with and
without augmented feature views.

Run: `python bench/bench_heads.py [--copies 2] [--store DIR]`. Uses ../shared/data/flowers and the
ImageNet MobileNetV2 weights from ../shared/weights (imported, trusted, into a temporary $KERAS_HOME).
Split: stratified, 20 % test, 10 % validation (carved from the other 80 %), seed 0.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "flowers"
WEIGHTS = (
    REPO.parent / "shared" / "weights" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
)
RESULTS = REPO / "bench" / "results" / "heads.json"
HEADS = [("svm", {}), ("svm", {"kernel": "linear"}), ("logistic", {}), ("dense", {}), ("knn", {})]
SPLIT = {"test_size": 0.2, "val_size": 0.1, "seed": 0}


def log(msg: str) -> None:
    """Print a timestamped progress line to stderr."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def fit_all(store: str, features: str, use_augmented: bool) -> list[dict]:
    """Fit every head of HEADS on `features`; return one summary row per head."""
    from featstore import Store

    rows = []
    for kind, options in HEADS:
        (r,) = Store(store).fit_head(kind, features, use_augmented=use_augmented, **SPLIT, **options)
        name = kind + (f" ({options['kernel']})" if options else (" (rbf)" if kind == "svm" else ""))
        rows.append(
            {
                "head": name,
                "test_accuracy": r.metrics["test"]["accuracy"],
                "val_accuracy": r.metrics["val"]["accuracy"],
                "fit_seconds": r.fit_seconds,
                "n_train": r.n_train + r.n_augmented_train,
                "energy_kwh": r.emissions.energy_kwh,
            }
        )
        log(
            f"{name}{' +aug' if use_augmented else ''}: test {r.metrics['test']['accuracy']:.4f}, "
            f"fit {r.fit_seconds:.1f} s"
        )
    return rows


def main() -> None:
    """Extract flowers (plain, then with views), fit every head on both, print the tables."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=2, help="augmented views per image")
    ap.add_argument("--augment", default="flip,rotate,zoom")
    ap.add_argument("--store", default=None, help="store to use (kept); default: a temp folder")
    args = ap.parse_args()
    if not DATA.is_dir() or not WEIGHTS.is_file():
        sys.exit(f"needs {DATA} and {WEIGHTS}")
    keras_home = Path(tempfile.mkdtemp(prefix="keras-home-"))
    os.environ["KERAS_HOME"] = str(keras_home)
    store = args.store or tempfile.mkdtemp(prefix="bench-heads-")
    from featstore import Store
    from featstore.backbones.fetching import import_weights

    import_weights(WEIGHTS, "mobilenet_v2", trust=True)  # not the file Keras publishes: trusted

    t0 = time.perf_counter()
    plain = Store(store).extract(DATA, "mobilenet_v2", name="flowers")
    log(
        f"plain features: {plain.n_images} images, computed {plain.n_computed} in {time.perf_counter() - t0:.0f} s"
    )
    base = fit_all(store, plain.feature_set, False)
    t0 = time.perf_counter()
    aug = Store(store).extract(DATA, "mobilenet_v2", name="flowers", augment=args.augment, copies=args.copies)
    log(
        f"with {args.copies} views of {args.augment}: computed {aug.n_computed} in {time.perf_counter() - t0:.0f} s"
    )
    with_aug = fit_all(store, aug.feature_set, True)

    print(
        f"featstore heads on flowers ({plain.n_images} photos, 5 classes), ImageNet MobileNetV2 features "
        f"(224 px, 1280-d), stratified split seed 0: train {base[0]['n_train']}, test 20 %\n"
    )
    print(
        f"{'head':16} {'test acc':>9} {'val acc':>8} {'fit s':>7} {'target':>22}   "
        f"{'+aug test acc':>13} {'+aug fit s':>10} {'gain':>7}"
    )
    for b, a in zip(base, with_aug, strict=True):
        target = ""
        if b["head"] in ("logistic", "svm (linear)"):
            target = f"fit < 10 s: {'PASS' if b['fit_seconds'] < 10 else 'MISS'}"
        print(
            f"{b['head']:16} {100 * b['test_accuracy']:8.2f}% {100 * b['val_accuracy']:7.2f}% "
            f"{b['fit_seconds']:7.2f} {target:>22}   {100 * a['test_accuracy']:12.2f}% {a['fit_seconds']:10.2f} "
            f"{100 * (a['test_accuracy'] - b['test_accuracy']):+6.2f}"
        )
    best = max(b["test_accuracy"] for b in base)
    print(f"\nbest head {100 * best:.2f}% test accuracy: target >= 90 %: {'PASS' if best >= 0.9 else 'MISS'}")
    print(
        f"augmented training rows: {with_aug[0]['n_train']} ({args.copies} views of each training image "
        f"+ the plain rows); views are never used for validation or test"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {"plain": base, "augmented": with_aug, "copies": args.copies, "augment": args.augment}, indent=2
        )
    )
    shutil.rmtree(keras_home, ignore_errors=True)
    if args.store is None:
        shutil.rmtree(store, ignore_errors=True)


if __name__ == "__main__":
    main()
