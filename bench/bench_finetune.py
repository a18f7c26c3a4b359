"""Benchmark `featstore finetune` on flowers: ImageNet MobileNetV2 fine-tuned end to end, against
two networks trained from scratch (simple-cnn, MobileNetV2 with random weights) and, for the
report, frozen MobileNetV2 features with a logistic head, all on one split.

Run: `python bench/bench_finetune.py [--store DIR] [--quick]`. Uses ../shared/data/flowers and the
ImageNet MobileNetV2 weights from ../shared/weights (copied into a temporary $KERAS_HOME).
Split: stratified, 20 % test, 10 % validation, seed 0: the split of bench/bench_heads.py.
Prints one line per run (test accuracy, minutes, kWh) and the `featstore report` table.
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
RESULTS = REPO / "bench" / "results" / "finetune.json"
SPLIT = {"test_size": 0.2, "val_size": 0.1, "seed": 0}
#: The fine-tune run: MobileNetV2's own 224 px, 10 epochs (about 2.5 min each on 2 cores).
FINETUNE = {
    "backbone": "mobilenet_v2",
    "input_size": 224,
    "epochs": 10,
    "warmup_epochs": 2,
    "unfreeze": "50",
    "lr": 1e-3,
    "fine_lr": 1e-4,
    "augment": "flip,rotate,zoom",
    "label_smoothing": 0.1,
    "dropout": 0.2,
}
#: The scratch baselines: short (few epochs, small inputs), to show the gap, not to close it.
SCRATCH = [
    {"backbone": "simple-cnn", "input_size": 128, "epochs": 15, "augment": "flip,rotate,zoom"},
    {
        "backbone": "mobilenet_v2",
        "weights": "none",
        "input_size": 96,
        "epochs": 10,
        "augment": "flip,rotate,zoom",
    },
]


def log(msg: str) -> None:
    """Print a timestamped progress line to stderr."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(data: Path, store: str, options: dict, name: str) -> dict:
    """Run one finetune with `options`; return its summary row."""
    from featstore import Reporter, Store

    log(f"{name}: {options}")
    options = dict(options)
    backbone = options.pop("backbone")
    store_ = Store(store, reporter=Reporter(log=lambda m: log(f"  {m}")))
    r = store_.finetune(data, backbone, name=name, **SPLIT, **options)
    m = r.metrics
    row = {
        "run": name,
        "method": r.method,
        "backbone": r.backbone,
        "input_size": r.input_size,
        "epochs": r.epochs_run,
        "best_epoch": r.best_epoch,
        "test_accuracy": m["test"]["accuracy"],
        "val_accuracy": m["val"]["accuracy"],
        "train_accuracy": m["train"]["accuracy"],
        "test_macro_f1": m["test"]["macro_f1"],
        "minutes": round(r.seconds / 60, 2),
        "train_images_per_s": r.train_images_per_s,
        "energy_kwh": r.emissions.energy_kwh,
        "co2_kg": r.emissions.co2_kg,
        "estimated": r.emissions.estimated,
        "n_train": r.split["n_train"],
        "n_test": r.split["n_test"],
        "options": options,
    }
    log(f"{name}: test accuracy {row['test_accuracy']:.4f}, {row['minutes']} min")
    return row


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA), help="folder of class folders (default: flowers)")
    ap.add_argument("--store", default=None, help="store to use (kept); default: a temp folder")
    ap.add_argument("--quick", action="store_true", help="2 epochs each at small sizes (a smoke run)")
    ap.add_argument("--no-head", action="store_true", help="skip the frozen features + logistic head row")
    ap.add_argument("--runs", default="fine-tune,scratch-1,scratch-2", help="which runs, comma-separated")
    for option in ("input-size", "epochs", "warmup-epochs", "unfreeze", "fine-lr", "dropout"):
        ap.add_argument(f"--{option}", default=None, help=f"fine-tune run: {option} (default: FINETUNE)")
    return ap.parse_args()


def _plans(args: argparse.Namespace) -> list[tuple[str, dict]]:
    """The runs asked for: (name, finetune keywords), the fine-tune run's overridden by the flags."""
    tuned = dict(FINETUNE)
    for key, kind in (("input_size", int), ("epochs", int), ("warmup_epochs", int), ("unfreeze", str)):
        if getattr(args, key) is not None:
            tuned[key] = kind(getattr(args, key))
    for key in ("fine_lr", "dropout"):
        if getattr(args, key) is not None:
            tuned[key] = float(getattr(args, key))
    plans = [("fine-tune", tuned)] + [(f"scratch-{i + 1}", s) for i, s in enumerate(SCRATCH)]
    wanted = args.runs.split(",")
    plans = [(n, o) for n, o in plans if n in wanted]
    if args.quick:
        plans = [
            (n, {**o, "epochs": 2, "warmup_epochs": 1} if "warmup_epochs" in o else {**o, "epochs": 2})
            for n, o in plans
        ]
    return plans


def _frozen_head(data: Path, store: str) -> dict:
    """Frozen MobileNetV2 features with a logistic head, on the same split."""
    from featstore import Store

    plain = Store(store).extract(data, "mobilenet_v2", name="flowers")
    (fit,) = Store(store).fit_head("logistic", plain.feature_set, **SPLIT)
    head = {"test_accuracy": fit.metrics["test"]["accuracy"], "head_id": fit.head_id}
    log(f"frozen features + logistic: test accuracy {head['test_accuracy']:.4f}")
    return head


def _print_table(data: Path, rows: list[dict], head: dict | None, total_min: float) -> None:
    import platform

    print(
        f"featstore finetune on {data.name} ({rows[0]['n_train']} train / {rows[0]['n_test']} test photos), "
        f"CPU: {os.cpu_count()} cores, {platform.processor() or platform.machine()}; split seed 0 as bench_heads.py\n"
    )
    print(
        f"{'run':30} {'method':9} {'backbone':26} {'epochs':>6} {'test acc':>9} {'macro F1':>8} {'minutes':>8} {'kWh':>9} {'img/s':>7}"
    )
    for r in rows:
        kwh = "-" if r["energy_kwh"] is None else f"{'~' if r['estimated'] else ''}{r['energy_kwh']:.4f}"
        print(
            f"{r['run']:30} {r['method']:9} {r['backbone']:26} {r['epochs']:>6} {100 * r['test_accuracy']:8.2f}% "
            f"{r['test_macro_f1']:8.3f} {r['minutes']:8.1f} {kwh:>9} {r['train_images_per_s'] or 0:7.1f}"
        )
    for ft in [r for r in rows if r["method"] == "fine-tune"]:
        ok_acc, ok_time = ft["test_accuracy"] >= 0.92, ft["minutes"] <= 60
        print(
            f"\n{ft['run']}: test accuracy {100 * ft['test_accuracy']:.2f}%: target >= 92 %: {'PASS' if ok_acc else 'MISS'}"
        )
        print(
            f"{ft['run']}: wall time {ft['minutes']:.1f} min: target <= 60 min on this CPU: {'PASS' if ok_time else 'MISS'}"
        )
    if head:
        print(f"frozen features + logistic head (224 px): test accuracy {100 * head['test_accuracy']:.2f}%")
    print(
        f"(benchmark total {total_min:.1f} min; kWh marked ~ are codecarbon estimates from CPU load x TDP)\n"
    )


def main() -> None:
    """Fine-tune, train the baselines, fit the frozen-feature head, print the comparison."""
    args = _args()
    data = Path(args.data)
    if not data.is_dir() or not WEIGHTS.is_file():
        sys.exit(f"needs {data} and {WEIGHTS}")
    keras_home = Path(tempfile.mkdtemp(prefix="keras-home-"))
    (keras_home / "models").mkdir()
    shutil.copy(WEIGHTS, keras_home / "models" / WEIGHTS.name)
    os.environ["KERAS_HOME"] = str(keras_home)
    store = args.store or tempfile.mkdtemp(prefix="bench-finetune-")
    t0 = time.perf_counter()
    rows = [
        run(data, store, o, f"flowers-{name}-{o['input_size']}px-{o['epochs']}ep") for name, o in _plans(args)
    ]
    head = None if args.no_head else _frozen_head(data, store)
    total_min = (time.perf_counter() - t0) / 60
    _print_table(data, rows, head, total_min)

    from featstore.report.build import build_report
    from featstore.report.markdown import render_markdown

    print(render_markdown(build_report(store, dataset=data.name)))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"runs": rows, "head": head, "total_minutes": total_min}, indent=2))
    shutil.rmtree(keras_home, ignore_errors=True)
    if args.store is None:
        shutil.rmtree(store, ignore_errors=True)


if __name__ == "__main__":
    main()
