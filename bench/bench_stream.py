"""Benchmark streamed heads against heads fitted in memory on flowers: test accuracy, log loss and
fit seconds of logistic (the default C grid, and C=1) and dense, each fitted both ways on the same
split, side by side in one process.

Run: `python bench/bench_stream.py [--store DIR]`. Uses ../shared/data/flowers and the ImageNet
MobileNetV2 weights from ../shared/weights (imported, trusted, into a temporary $KERAS_HOME); the features
are extracted once into the store. Streaming is for sets larger than memory: this measures that
it fits the same head, not that it is faster on 4,309 rows (it is not).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "flowers"
WEIGHTS = (
    REPO.parent / "shared" / "weights" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
)
HEADS = [("logistic", {}), ("logistic", {"C": 1}), ("dense", {})]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default=None, help="store to use (default: a temporary one)")
    args = ap.parse_args()
    if not DATA.is_dir() or not WEIGHTS.is_file():
        raise SystemExit(f"needs {DATA} and {WEIGHTS}")
    keras_home = Path(tempfile.mkdtemp(prefix="keras-"))
    os.environ["KERAS_HOME"] = str(keras_home)
    store = args.store or tempfile.mkdtemp(prefix="featstore-stream-")
    try:
        from featstore import Store
        from featstore.backbones.fetching import import_weights

        import_weights(WEIGHTS, "mobilenet_v2", trust=True)  # not the file Keras publishes: trusted

        s = Store(store, emissions=False)
        features = s.extract(DATA, "mobilenet_v2", name="flowers").feature_set
        print(
            f"{'head':<20} {'in memory: test acc':>20} {'log loss':>9} {'fit s':>7}   {'streamed':>9} {'log loss':>9} {'fit s':>7}"
        )
        for kind, options in HEADS:
            got = [s.fit_head(kind, features, stream=stream, **options)[0] for stream in (False, True)]
            cells = [
                f"{r.metrics['test']['accuracy']:>9.4f} {r.metrics['test']['log_loss']:>9.3f} {r.fit_seconds:>7.1f}"
                for r in got
            ]
            label = kind + (f" C={options['C']}" if options else "")
            print(f"{label:<20} {cells[0]:>31}   {cells[1]}", flush=True)
    finally:
        shutil.rmtree(keras_home, ignore_errors=True)
        if args.store is None:
            shutil.rmtree(store, ignore_errors=True)


if __name__ == "__main__":
    main()
