"""Benchmark `featstore fit-head sweep`: the default grid on 4,000 x 1,280 features against the
obvious alternative, one `fit_head` call per setting, side by side in one process.

Run: `python bench/bench_sweep.py [--rows 4000] [--features 1280] [--classes 10] [--flowers]`.

Section 1 (speed, synthetic features of the asked shape, written as a real feature set in a
temporary store): the default grid (22 settings of svm, logistic, knn and dense) fitted by
`sweep` with 2 threads, by `sweep` with 1 thread, and by one `fit_head` per setting (each
loads the features, splits, scales, fits, scores every part and saves a head: what a user's loop
over `featstore fit-head` does, without the process start-ups). TensorFlow is imported once
before any timing (its import is printed apart). Target: the 2-thread sweep under 60 s on 2
cores. `bg load` is the share of all cores other processes used meanwhile (from /proc/stat):
when it is high, the figures are slower than on an idle machine.

Section 2 (`--flowers`, accuracy): flowers (../shared/data/flowers, 5 classes) extracted with
ImageNet MobileNetV2 (../shared/weights, imported with --trust into a temporary $KERAS_HOME),
then `fit-head all` (each kind with its defaults: the best single head), the default sweep
with `--ensemble 3`, and their test accuracies side by side; split stratified, seed 0.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "flowers"
WEIGHTS = (
    REPO.parent / "shared" / "weights" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
)
TARGET_S = 60.0


def log(msg: str) -> None:
    """Print a timestamped progress line to stderr."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cpu_seconds() -> tuple[float, float]:
    """(busy CPU seconds of the whole machine, CPU seconds of this process)."""
    try:
        with open("/proc/stat") as f:
            v = [int(n) for n in f.readline().split()[1:9]]
    except OSError:
        v = [0] * 8
    t = os.times()
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK"), t.user + t.system


def timed(fn, *args, **kwargs) -> tuple:
    """Call `fn`; return (its result, wall seconds, share of all cores busy with other processes)."""
    (busy0, own0), t0 = cpu_seconds(), time.perf_counter()
    out = fn(*args, **kwargs)
    wall, (busy1, own1) = time.perf_counter() - t0, cpu_seconds()
    return out, wall, max(0.0, (busy1 - busy0) - (own1 - own0)) / (wall * (os.cpu_count() or 1))


def synthetic(n_rows: int, n_features: int, n_classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features shaped like a CNN's pooled activations: non-negative, about 70 % zeros, correlated
    through a 256-d latent space, classes about 86 % separable by a linear head."""
    rng = np.random.default_rng(seed)
    latent = 256
    W = rng.normal(0, 1, (latent, n_features)) / np.sqrt(latent)
    centres = rng.normal(0, 0.25, (n_classes, latent))
    y = np.arange(n_rows) % n_classes
    rng.shuffle(y)
    Z = centres[y] + rng.normal(0, 1, (n_rows, latent))
    X = np.maximum(Z @ W + rng.normal(0, 1, (n_rows, n_features)) - 0.8, 0)
    return X.astype(np.float32), y


def write_set(
    store: Path, name: str, X: np.ndarray, y: np.ndarray, classes: list[str], digests=None, split=None
) -> None:
    """Write `X`, `y` as a real feature set `name` of `store` (as `extract` would, minus the
    images), with content `digests` and stored parts `split` (default: made up, no parts)."""
    import h5py

    from featstore.store.featuresets import FeatureRows, write_feature_set
    from featstore.store.layout import resolve_store
    from featstore.store.parts import FeatureSource

    layout = resolve_store(store)
    digests = list(digests) if digests is not None else [f"{i:064x}" for i in range(len(y))]
    keys = [f"{d}:0" for d in digests]
    rows = FeatureRows(
        paths=[f"{classes[c]}/{i}.jpg" for i, c in enumerate(y)],
        labels=np.asarray(y),
        digests=digests,
        split=list(split) if split is not None else [""] * len(y),
        view=np.zeros(len(y), np.int16),
    )
    layout.features.mkdir(parents=True, exist_ok=True)
    src = layout.root / ".bench.h5"
    with h5py.File(src, "w") as f:
        f["features"] = X
    source = FeatureSource()
    source.add_path(src, keys)
    dataset, backbone = name.split("@")
    attrs = {"class_names": classes, "backbone": backbone, "backbone_digest": "b" * 64, "dataset": dataset}
    write_feature_set(layout.feature_set(name), rows, source, X.shape[1], "float32", attrs, keys=keys)
    source.close()
    src.unlink()


def by_hand(store: str, name: str) -> list:
    """The default grid as a user's loop: one `fit_head` per setting (loads, splits, fits, scores, saves)."""
    from featstore import JobOptions, fit_head
    from featstore.heads.grid import expand_grid

    results = []
    for setting in expand_grid(None):
        (r,) = fit_head(setting.params, [name], job=JobOptions(store, emissions=False))
        results.append(r)
    return results


def section_speed(args: argparse.Namespace, work: Path) -> list[str]:
    """Section 1: sweep (2 threads, 1 thread) against one fit_head per setting."""
    from featstore import Store

    classes = [f"c{i}" for i in range(args.classes)]
    X, y = synthetic(args.rows, args.features, args.classes)
    name = "synthetic@cnn"
    stores = {k: work / k for k in ("sweep2", "sweep1", "hand")}
    for s in stores.values():
        write_set(s, name, X, y, classes)
    _, tf_s, _ = timed(__import__, "keras")
    log(f"TensorFlow/Keras imported in {tf_s:.1f} s (not in the timings below)")
    runs = {}
    for key, jobs in (("sweep2", 2), ("sweep1", 1)):
        r, wall, bg = timed(Store(stores[key], emissions=False).sweep, name, n_jobs=jobs)
        runs[key] = (r, wall, bg)
        log(f"sweep, {jobs} thread(s): {wall:.1f} s (bg load {bg:.0%})")
    hand, wall, bg = timed(by_hand, str(stores["hand"]), name)
    runs["hand"] = (hand, wall, bg)
    log(f"one fit_head per setting: {wall:.1f} s (bg load {bg:.0%})")
    return report_speed(args, runs, tf_s)


def report_speed(args: argparse.Namespace, runs: dict, tf_s: float) -> list[str]:
    sweep2, s2, bg2 = runs["sweep2"]
    _, s1, bg1 = runs["sweep1"]
    hand, sh, bgh = runs["hand"]
    n = sweep2.n_settings
    best = sweep2.rows[0]
    hand_best = max(hand, key=lambda r: r.metrics["val"]["accuracy"])
    lines = [
        f"1. Default grid ({n} settings) on {args.rows:,} x {args.features:,} synthetic features, "
        f"{args.classes} classes (split 70/10/20, seed 0); TensorFlow import {tf_s:.1f} s apart",
        "",
        f"{'way':34} {'seconds':>8} {'settings/s':>10} {'bg load':>8} {'vs by hand':>10}",
        f"{'sweep, 2 threads':34} {s2:8.1f} {n / s2:10.2f} {bg2:8.0%} {sh / s2:9.2f}x",
        f"{'sweep, 1 thread':34} {s1:8.1f} {n / s1:10.2f} {bg1:8.0%} {sh / s1:9.2f}x",
        f"{'one fit_head per setting (by hand)':34} {sh:8.1f} {n / sh:10.2f} {bgh:8.0%} {1:9.2f}x",
        "",
        f"target: the 2-thread sweep under {TARGET_S:.0f} s: {'PASS' if s2 < TARGET_S else 'MISS'} ({s2:.1f} s)",
        f"sweep's choice: {best['setting']} (val {best['val_accuracy']:.4f}, test {best['test_accuracy']:.4f}); "
        f"by hand, best on val: {hand_best.kind} {hand_best.config} "
        f"(val {hand_best.metrics['val']['accuracy']:.4f}, test {hand_best.metrics['test']['accuracy']:.4f})",
        "",
    ]
    return lines


def section_flowers(work: Path) -> list[str]:
    """Section 2: the best single head, the sweep's winner and its ensemble of 3, on flowers."""
    from featstore import Store
    from featstore.backbones.fetching import import_weights

    if not DATA.is_dir() or not WEIGHTS.is_file():
        return [f"2. skipped: needs {DATA} and {WEIGHTS}", ""]
    keras_home = work / "keras_home"
    (keras_home / "models").mkdir(parents=True)
    os.environ["KERAS_HOME"] = str(keras_home)
    import_weights(str(WEIGHTS), backbone="mobilenet_v2", trust=True)
    store = Store(work / "flowers", emissions=False)
    ex, ex_s, _ = timed(store.extract, DATA, "mobilenet_v2", name="flowers")
    log(f"flowers extracted: {ex.n_images} images in {ex_s:.0f} s")
    singles, single_s, _ = timed(store.fit_head, "all", ex.feature_set)
    swept, sweep_s, bg = timed(store.sweep, ex.feature_set, ensemble=3, n_jobs=2)
    lines = [
        f"2. flowers ({ex.n_images} photos, 5 classes), ImageNet MobileNetV2 (224 px, 1,280 features); "
        "stratified split seed 0, test 20 %",
        "",
        f"{'head':46} {'val acc':>8} {'test acc':>9}",
    ]
    best_single = max(singles, key=lambda r: r.metrics["val"]["accuracy"])
    for r in singles:
        mark = "  <- best single head on val" if r is best_single else ""
        lines.append(
            f"{'fit-head ' + r.kind + ' (defaults)':46} {_acc(r, 'val'):>8} {_acc(r, 'test'):>9}{mark}"
        )
    for row in swept.rows:
        if row["chosen"]:
            label = f"sweep {row['chosen']}: {row['setting']}"[:46]
            lines.append(f"{label:46} {row['val_accuracy']:8.4f} {row['test_accuracy']:9.4f}")
    lines += [
        "",
        f"fit-head all: {single_s:.1f} s; sweep of {swept.n_settings} settings + ensemble: {sweep_s:.1f} s "
        f"(bg load {bg:.0%})",
        "",
    ]
    return lines


def _acc(result, part: str) -> str:
    return f"{result.metrics[part]['accuracy']:.4f}"


def main() -> None:
    """Run the sections and print their tables."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=4000)
    ap.add_argument("--features", type=int, default=1280)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--flowers", action="store_true", help="also section 2 (accuracy on flowers)")
    ap.add_argument("--no-speed", action="store_true", help="skip section 1")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    try:
        print(f"featstore fit-head sweep: {os.cpu_count()} cores, Python {sys.version.split()[0]}\n")
        lines = [] if args.no_speed else section_speed(args, work)
        if args.flowers:
            lines += section_flowers(work)
        print("\n".join(lines))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
