"""Benchmark how a sweep chooses: `--select cv` against `--select val` on the same images, side by
side in one process, on flowers (MobileNetV2 ImageNet features).

Run: `python bench/bench_select.py [--store DIR --features flowers@mobilenet_v2] [--draws 20]
[--per-class 30] [--no-full] [--grid GRID.json]`.

Without `--store`, flowers (../shared/data/flowers) is extracted first with ImageNet MobileNetV2
(../shared/weights, imported with --trust into a temporary $KERAS_HOME).

1. Small draws: the feature set's stratified 70/10/20 split (seed 0) fixes the test part; each
   of `--draws` draws takes `--per-class` images per class from the training part (seed = draw).
   The draw and the unchanged test part are written as a feature set of their own (stored
   train/test parts, validation carved from train at 10 %, as a user with those images would
   have), and the same sweep runs twice on it: `--select val` and `--select cv` (5 folds x 2).
   Printed: the test accuracy of each choice per draw, the mean and standard deviation of the
   difference (cv - val), its standard error, and how often each wins.
2. Full set (`--no-full` to skip): the sweep on the whole feature set with the same split, val
   against cv, each with `--ensemble 10` (the greedy ensemble and whether it was chosen), the
   chosen head's setting and test accuracy, and the seconds each took.
3. With section 2: the cv-chosen setting fitted again with each `--calibrate` method (test ECE
   before and after), and an "unknown" threshold chosen for precision 0.98 on its held-out
   (out-of-fold) predictions, applied to the test part (precision and share answered there).

The grid is the default one without dense (18 settings; dense's Keras fits cost 10x under the
folds), or `--grid`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from bench_sweep import DATA, WEIGHTS, log, write_set  # noqa: E402

from featstore import Store  # noqa: E402
from featstore.heads.grid import DEFAULT_GRID  # noqa: E402

GRID = {k: v for k, v in DEFAULT_GRID.items() if k != "dense"}


def chosen(result) -> tuple[str, float]:
    """The setting and test accuracy of a sweep's chosen head."""
    row = next(r for r in result.rows if r["chosen"] == "best")
    return row["setting"], row["test_accuracy"]


def flowers_store(work: Path) -> tuple[Path, str]:
    """Extract flowers with ImageNet MobileNetV2 into a store under `work`."""
    from featstore.backbones.fetching import import_weights

    if not DATA.is_dir() or not WEIGHTS.is_file():
        sys.exit(f"needs {DATA} and {WEIGHTS}, or --store and --features")
    keras_home = work / "keras_home"
    (keras_home / "models").mkdir(parents=True)
    os.environ["KERAS_HOME"] = str(keras_home)
    import_weights(str(WEIGHTS), backbone="mobilenet_v2", trust=True)
    result = Store(work / "store", emissions=False).extract(DATA, "mobilenet_v2", name="flowers")
    return work / "store", result.feature_set


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store")
    parser.add_argument("--features", default="flowers@mobilenet_v2")
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--per-class", type=int, default=30)
    parser.add_argument("--no-full", action="store_true")
    parser.add_argument("--grid")
    args = parser.parse_args()
    grid = json.loads(Path(args.grid).read_text()) if args.grid else GRID
    work = Path(tempfile.mkdtemp(prefix="bench-select-"))
    store, name = (Path(args.store), args.features) if args.store else flowers_store(work)
    fs = Store(store, emissions=False).feature_set(name)
    X, y = fs.to_numpy()
    digests, classes = list(fs.digests), list(fs.class_names)
    from featstore.data.options import SplitOptions
    from featstore.data.splits import make_split

    parts = make_split(
        y, [""] * len(y), classes, SplitOptions(split="stratified", test_size=0.2, val_size=0.1)
    )
    pool = np.concatenate([parts.train, parts.val])  # the training part a user would draw from
    lines = [
        f"{name}: {len(y)} images, {len(classes)} classes; test part fixed: {len(parts.test)} images; "
        f"grid: {sum(1 for _ in _settings(grid))} settings",
        "",
        f"1. {args.draws} draws of {args.per_class} images per class (validation: 10 % carved from them)",
        "",
        f"{'draw':>4} {'val: chosen setting':28} {'test':>7}  {'cv: chosen setting':28} {'test':>7}  {'cv-val':>7}",
    ]
    diffs = []
    for draw in range(args.draws):
        rng = np.random.default_rng(draw)
        picked = np.concatenate(
            [rng.choice(pool[y[pool] == c], args.per_class, replace=False) for c in range(len(classes))]
        )
        rows = np.concatenate([picked, parts.test])
        split = ["train"] * len(picked) + ["test"] * len(parts.test)
        sub = work / f"draw{draw}"
        write_set(sub, "draw@mnv2", X[rows], y[rows], classes, [digests[i] for i in rows], split)
        s = Store(sub, emissions=False)
        on_val = chosen(s.sweep("draw@mnv2", grid=grid, select="val", val_size=0.1))
        by_cv = chosen(s.sweep("draw@mnv2", grid=grid, select="cv", val_size=0.1))
        diffs.append(by_cv[1] - on_val[1])
        lines.append(
            f"{draw:4d} {on_val[0][:28]:28} {on_val[1]:7.2%}  {by_cv[0][:28]:28} {by_cv[1]:7.2%}  "
            f"{100 * diffs[-1]:+6.2f}"
        )
        log(lines[-1])
    d = np.array(diffs) if diffs else np.zeros(1)
    lines += [
        "",
        f"cv - val, test accuracy: mean {100 * d.mean():+.2f} points, std {100 * d.std(ddof=1):.2f}, "
        f"standard error {100 * d.std(ddof=1) / np.sqrt(len(d)):.2f}; cv better in {(d > 0).sum()}, "
        f"val better in {(d < 0).sum()}, equal in {(d == 0).sum()} of {len(d)} draws",
        "",
    ]
    if not args.no_full:
        s = Store(store, emissions=False)
        lines += ["2. the whole set, stratified 70/10/20, seed 0, --ensemble 10", ""]
        for select in ("val", "cv"):
            t0 = time.perf_counter()
            result = s.sweep(name, grid=grid, select=select, split="stratified", ensemble=10)
            setting, acc = chosen(result)
            lines.append(
                f"--select {select:3}: {setting:28} test {acc:.2%} ({time.perf_counter() - t0:.0f} s)"
            )
            lines += [f"  {n}" for n in result.notes if n.startswith("greedy")]
            ens = [r for r in result.rows if r["kind"] == "ensemble"]
            lines += [f"  ensemble on test: {r['test_accuracy']:.2%} ({r['chosen']})" for r in ens]
            log(lines[-1])
        lines += ["", *calibration_and_unknown(s, name, result)]
    print("\n".join(lines))


def calibration_and_unknown(s: Store, name: str, result) -> list[str]:
    """Section 3 on the cv-chosen single head's setting."""
    import numpy as np

    from featstore.heads.metrics import class_probabilities
    from featstore.heads.thresholds import held_out, threshold_for_precision
    from featstore.store.head_files import load_head, read_meta

    row = next(
        r for r in result.rows if r["chosen"] in ("best", f"best {r['kind']}") and r["kind"] != "ensemble"
    )
    config = read_meta(s.layout, row["head_id"])["config"]
    kind = config.pop("kind")
    params = {k: v for k, v in config.items() if k not in ("random_state", "calibrate")}
    out = [f"3. {row['setting']} (select cv): calibration fitted on out-of-fold predictions", ""]
    for method in (None, "temperature", "sigmoid", "isotonic"):
        (head,) = s.fit_head(kind, name, select="cv", calibrate=method, split="stratified", **params)
        meta = read_meta(s.layout, head.head_id)
        before = (meta.get("calibration") or {}).get("test_ece_before")
        was = "" if before is None else f" (before: {before:.4f})"
        out.append(
            f"--calibrate {str(method):11}: test accuracy {head.metrics['test']['accuracy']:.2%}, "
            f"log loss {head.metrics['test']['log_loss']:.4f}, ECE {head.metrics['test']['ece']:.4f}{was}"
        )
        log(out[-1])
        if method is None:
            plain = head
    estimator, meta = load_head(s.layout, plain.head_id)
    proba, y, where = held_out(s.layout, plain.head_id, estimator, meta)
    value, precision, coverage = threshold_for_precision(proba, y, 0.98)
    data = s.feature_set(name)
    X, labels = data.to_numpy()
    test_digests = set(json.loads((s.layout.heads / plain.head_id / "split.json").read_text())["test"])
    rows = np.array([d in test_digests for d in data.digests])
    p = class_probabilities(estimator, X[rows], len(data.class_names))
    kept = p.max(axis=1) >= value
    right = p.argmax(axis=1) == labels[rows]
    out += [
        "",
        f"--target-precision 0.98: threshold {value:.4f} chosen on {len(y)} {where} "
        f"(there: precision {precision:.4f}, {coverage:.1%} answered); on test: precision "
        f"{right[kept].mean():.4f} on the {kept.mean():.1%} answered (all rows: {right.mean():.4f})",
    ]
    return out


def _settings(grid):
    from featstore.heads.grid import expand_grid

    return expand_grid(grid, ())


if __name__ == "__main__":
    main()
