"""Benchmark featstore extraction on CPU: ORT vs Keras, extract vs pure ORT, cached re-run, peak RSS.

Run from anywhere: `python bench/bench_extract.py [--quick]`. Tables go to stdout, progress to
stderr, numbers to bench/results/extract.json. See bench/README.md.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"  # before anything imports TensorFlow

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "flowers"
DEFAULT_WEIGHTS = REPO.parent / "shared" / "weights"
RESULTS = REPO / "bench" / "results" / "extract.json"
MNV2_WEIGHTS = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
BATCH, SIZE_PX = 32, 224
TARGETS = {"ort_vs_keras": 2.0, "extract_vs_ort": 0.85, "rerun_speedup": 50.0, "mem_growth": 1.10}


def log(msg: str) -> None:
    """Print a timestamped progress line to stderr."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def dist_version(*names: str) -> str:
    """Return the installed version of the first distribution of `names` found."""
    for name in names:
        try:
            return f"{version(name)} ({name})"
        except PackageNotFoundError:
            continue
    return "absent"


def machine_info() -> dict:
    """Describe the machine: cores, CPU model, memory and library versions."""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "unknown")
    except OSError:
        cpu = "unknown"
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu": cpu,
        "mem_gib": round(mem_gib, 1),
        "python": sys.version.split()[0],
        "featstore": dist_version("featstore"),
        "onnxruntime": dist_version("onnxruntime-gpu", "onnxruntime"),
        "tensorflow": dist_version("tensorflow", "tensorflow-cpu"),
        "keras": dist_version("keras"),
    }


def prepare_weights(weights_dir: Path, keras_home: Path) -> bool:
    """Point $KERAS_HOME at a temp dir holding the MobileNetV2 no-top weights; True if found."""
    os.environ["KERAS_HOME"] = str(keras_home)
    src = weights_dir / MNV2_WEIGHTS
    if not src.is_file():
        return False
    (keras_home / "models").mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, keras_home / "models" / MNV2_WEIGHTS)
    return True


def make_synthetic(root: Path, n_total: int, n_classes: int = 5) -> Path:
    """Write `n_total` smooth random 256x192 JPEG photos into `n_classes` class folders."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n_total):
        folder = root / f"class{i % n_classes}"
        folder.mkdir(parents=True, exist_ok=True)
        low = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
        arr = np.asarray(low.resize((256, 192), Image.Resampling.BICUBIC), dtype=np.int16)
        arr = np.clip(arr + rng.integers(-10, 11, arr.shape), 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(folder / f"img{i:05d}.jpg", quality=90)
    return root


def make_subset(src: Path, dst: Path, n: int) -> tuple[Path, int]:
    """Build `dst/<class>/` symlinks to the first files of each class of `src`, `n` in all, balanced."""
    from featstore.images import IMAGE_EXTENSIONS

    files = {
        d.name: sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.name[0] != ".")
        for d in sorted(src.iterdir())
        if d.is_dir() and not d.name.startswith(".")
    }
    left, total = n, 0
    for i, (cls, paths) in enumerate(sorted(files.items(), key=lambda kv: len(kv[1]))):
        take = min(len(paths), left // (len(files) - i))
        left, total = left - take, total + take
        (dst / cls).mkdir(parents=True, exist_ok=True)
        for p in paths[:take]:
            (dst / cls / p.name).symlink_to(p.resolve())
    return dst, total


def fresh_store(root: Path, backbones: Path) -> Path:
    """Create an empty store at `root` whose `backbones/` links to the shared export folder."""
    root.mkdir(parents=True)
    (root / "backbones").symlink_to(backbones, target_is_directory=True)
    return root


def decode_all(data: Path) -> tuple[np.ndarray, float]:
    """Decode every image of `data` (scan order, one thread) to (N, 224, 224, 3) uint8; with seconds."""
    from featstore.images import decode_image, scan_dataset

    t0 = time.perf_counter()
    x = np.stack([decode_image(it.path.read_bytes(), SIZE_PX) for it in scan_dataset(data).items])
    return x, time.perf_counter() - t0


def time_ort(session, x: np.ndarray) -> tuple[float, np.ndarray]:
    """Warm up once, then run `x` through the ONNX session in batches; return (seconds, features)."""
    session.run(x[:BATCH])
    t0 = time.perf_counter()
    feats = [session.run(x[i : i + BATCH]) for i in range(0, len(x), BATCH)]
    return time.perf_counter() - t0, np.concatenate(feats)


def time_keras(model, x: np.ndarray) -> tuple[float, np.ndarray]:
    """Warm up once (full and last partial batch), then time `model.predict`; return (seconds, features)."""
    model.predict(x[: BATCH + len(x) % BATCH], batch_size=BATCH, verbose=0)
    t0 = time.perf_counter()
    feats = model.predict(x, batch_size=BATCH, verbose=0)
    return time.perf_counter() - t0, np.asarray(feats, dtype=np.float32)


def rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Return ||a - b|| / ||b||."""
    return float(np.linalg.norm(a - b) / max(float(np.linalg.norm(b)), 1e-12))


def run_extract(data: Path, backbone: str, store: Path, weights: str, emissions: bool):
    """Call `featstore.extraction.extract` on CPU; return (wall seconds, ExtractResult)."""
    from featstore.extraction import extract

    t0 = time.perf_counter()
    res = extract(
        str(data),
        backbone,
        store=str(store),
        weights=weights,
        input_size=SIZE_PX,
        device="cpu",
        emissions=emissions,
    )
    return time.perf_counter() - t0, res


def proc_status_kib(key: str) -> int | None:
    """Return a kB field (VmRSS, VmHWM) of /proc/self/status, or None off Linux."""
    try:
        with open("/proc/self/status") as f:
            return next((int(ln.split()[1]) for ln in f if ln.startswith(key + ":")), None)
    except OSError:
        return None


def child_peak(args: argparse.Namespace) -> None:
    """Run one end-to-end extract in this fresh process and print its peak RSS as one JSON line."""
    for mod in ("featstore.extraction", "h5py", "onnxruntime", "PIL.Image"):
        importlib.import_module(mod)
    base_kib = proc_status_kib("VmRSS")
    secs, res = run_extract(Path(args.data), args.backbones, Path(args.store_), args.weights_, False)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"n_images": res.n_images, "n_computed": res.n_computed, "seconds": secs, "peak_kib": peak_kib}
    out.update(base_kib=base_kib, hwm_kib=proc_status_kib("VmHWM"), tf_imported="tensorflow" in sys.modules)
    print(json.dumps(out))


def run_child(n: int, data: Path, store: Path, backbone: str, weights: str) -> dict:
    """Measure peak RSS of extract on `data` in a fresh subprocess."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_child-peak", str(n), "--data", str(data)]
    cmd += ["--backbones", backbone, "--store-", str(store), "--weights-", weights]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"memory child for {n} images failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(title: str, header: list[str], rows: list[list[str]]) -> str:
    """Render a plain-text table under a title line."""
    cells = [header, *rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join([title, *lines, ""])


def verdict(ok: bool) -> str:
    """Return PASS or MISS."""
    return "PASS" if ok else "MISS"


def bench_backbone(name: str, weights: str, subset: Path, work: Path, backbones: Path) -> dict:
    """Run sections 1-3 for one backbone and return its figures."""
    from featstore.backbones import resolve_recipe
    from featstore.export import build_keras_backbone, ensure_backbone
    from featstore.layout import resolve_store
    from featstore.runtime import open_session

    recipe = resolve_recipe(name, weights=weights, input_size=SIZE_PX)
    t0 = time.perf_counter()
    exported = ensure_backbone(recipe, resolve_store(fresh_store(work / f"export-{name}", backbones)))
    r: dict = {"backbone": name, "weights": weights, "export_s": time.perf_counter() - t0}
    log(f"{name}: exported to ONNX in {r['export_s']:.1f} s; decoding {subset.name}")
    x, r["decode_1thread_s"] = decode_all(subset)
    n = r["n_images"] = len(x)
    session = open_session(exported.path, device="cpu")
    log(f"{name}: ORT on {n} pre-decoded images")
    ort_s, ort_feats = time_ort(session, x)
    log(f"{name}: Keras model.predict on {n} images")
    model, _ = build_keras_backbone(recipe)
    keras_s, keras_feats = time_keras(model, x)
    r.update(ort_s=ort_s, keras_s=keras_s, ort_ips=n / ort_s, keras_ips=n / keras_s)
    r["ort_vs_keras"] = r["ort_ips"] / r["keras_ips"]
    r["ort_keras_rel_diff"] = rel_diff(ort_feats, keras_feats)
    del model
    importlib.import_module("keras").backend.clear_session()
    gc.collect()

    log(f"{name}: end-to-end extract into a fresh store")
    store = fresh_store(work / f"store-{name}", backbones)
    first_s, res = run_extract(subset, name, store, weights, False)
    ort2_s, _ = time_ort(session, x)
    from featstore.store import FeatureSetReader

    with FeatureSetReader(res.path) as reader:
        r["extract_ort_rel_diff"] = rel_diff(reader.read_features(), ort_feats)
    r.update(extract_s=first_s, extract_ips=res.n_images / first_s, extract_lib_ips=res.images_per_s)
    r.update(ort2_s=ort2_s, ort2_ips=n / ort2_s, n_computed=res.n_computed)
    r["extract_vs_ort"] = r["extract_ips"] / r["ort2_ips"]
    log(f"{name}: unchanged re-runs (emissions off, then on)")
    rerun_s, res2 = run_extract(subset, name, store, weights, False)
    rerun_em_s, res3 = run_extract(subset, name, store, weights, True)
    r.update(rerun_s=rerun_s, rerun_n_computed=res2.n_computed, rerun_written=res2.written)
    r.update(rerun_em_s=rerun_em_s, rerun_em_n_computed=res3.n_computed, rerun_em_note=res3.emissions.note)
    r.update(rerun_speedup=first_s / rerun_s, rerun_em_speedup=first_s / rerun_em_s)
    return r


def report(results: dict) -> str:
    """Render the four section tables."""
    t, rows = TARGETS, results["backbones"]
    n = rows[0]["n_images"] if rows else 0
    s1 = [
        [
            r["backbone"],
            r["weights"],
            f"{r['keras_ips']:.1f}",
            f"{r['ort_ips']:.1f}",
            f"{r['ort_vs_keras']:.2f}x",
        ]
        + [f">= {t['ort_vs_keras']:.0f}x", verdict(r["ort_vs_keras"] >= t["ort_vs_keras"])]
        + [f"{r['ort_keras_rel_diff']:.1e}"]
        for r in rows
    ]
    h1 = ["backbone", "weights", "Keras img/s", "ORT img/s", "ORT/Keras", "target", "result", "rel diff"]
    s2 = [
        [r["backbone"], f"{r['extract_ips']:.1f}", f"{r['extract_lib_ips'] or 0:.1f}", f"{r['ort2_ips']:.1f}"]
        + [f"{100 * r['extract_vs_ort']:.0f}%", f">= {100 * t['extract_vs_ort']:.0f}%"]
        + [verdict(r["extract_vs_ort"] >= t["extract_vs_ort"]), f"{n / r['decode_1thread_s']:.0f}"]
        for r in rows
    ]
    h2 = ["backbone", "extract img/s", "(lib loop)", "pure ORT img/s", "extract/ORT", "target", "result"]
    h2.append("decode img/s (1 thread)")
    s3 = []
    for r in rows:
        s3.append([r["backbone"], "first run", f"{r['extract_s']:.2f}", str(r["n_computed"]), "1x", "", ""])
        sp, ok = r["rerun_speedup"], r["rerun_speedup"] >= t["rerun_speedup"]
        s3.append(["", "re-run", f"{r['rerun_s']:.3f}", str(r["rerun_n_computed"]), f"{sp:.0f}x"])
        s3[-1] += [f">= {t['rerun_speedup']:.0f}x", verdict(ok)]
        s3.append(["", "re-run, emissions=True", f"{r['rerun_em_s']:.3f}", str(r["rerun_em_n_computed"])])
        s3[-1] += [f"{r['rerun_em_speedup']:.0f}x", "(info)", ""]
    h3 = ["backbone", "run", "seconds", "computed", "first/run", "target", "result"]
    out = [
        table(f"1. ONNX Runtime vs Keras model.predict (CPU, batch {BATCH}, {n} pre-decoded images)", h1, s1),
        table(f"2. End-to-end extract (JPEG files -> HDF5, fresh store) vs pure ORT ({n} images)", h2, s2),
        table(f"3. Unchanged re-run of extract vs first run ({n} images)", h3, s3),
    ]
    if results.get("memory"):
        m = results["memory"]
        s4 = [
            [str(c["n_images"]), f"{c['peak_kib'] / 1024:.0f}", f"{(c['base_kib'] or 0) / 1024:.0f}"]
            + [f"{(c['peak_kib'] - (c['base_kib'] or 0)) / 1024:.0f}", f"{c['seconds']:.1f}"]
            + [f"{c['n_images'] / c['seconds']:.1f}"]
            for c in m["runs"]
        ]
        h4 = ["images", "peak RSS MiB", "after imports MiB", "extract adds MiB", "seconds", "img/s"]
        title = (
            f"4. Peak RSS of end-to-end extract, fresh subprocess each ({m['backbone']}, ORT export reused)"
        )
        body = table(title, h4, s4)
        body += (
            f"peak ratio {m['runs'][-1]['n_images']}/{m['runs'][0]['n_images']} images: {m['ratio']:.3f}"
            f"  target <= {t['mem_growth']:.2f}  {verdict(m['ratio'] <= t['mem_growth'])}\n"
        )
        out.append(body)
    return "\n".join(out)


def parse_args() -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of class folders of JPEGs")
    p.add_argument("--weights-dir", type=Path, default=DEFAULT_WEIGHTS, help="holds the MobileNetV2 .h5")
    p.add_argument(
        "--backbones", default="mobilenet_v2,resnet50", help="comma-separated; memory uses the first"
    )
    p.add_argument("--n-images", type=int, default=1000, help="images for sections 1-3")
    p.add_argument("--mem-sizes", default="1000,4000", help="dataset sizes for the memory section")
    p.add_argument("--quick", action="store_true", help="smoke run: 64 images, memory at 200/400")
    p.add_argument("--no-memory", action="store_true", help="skip section 4")
    p.add_argument("--_child-peak", type=int, default=0, dest="child_peak", help=argparse.SUPPRESS)
    p.add_argument("--store-", dest="store_", help=argparse.SUPPRESS)
    p.add_argument("--weights-", dest="weights_", help=argparse.SUPPRESS)
    return p.parse_args()


def main() -> None:
    """Run the benchmark (or, with --_child-peak, one memory measurement)."""
    args = parse_args()
    if args.child_peak:
        child_peak(args)
        return
    n_images, mem_sizes = (
        (64, [200, 400]) if args.quick else (args.n_images, [int(s) for s in args.mem_sizes.split(",")])
    )
    mem_sizes = [] if args.no_memory else mem_sizes
    names = [b.strip() for b in args.backbones.split(",") if b.strip()]
    work = Path(tempfile.mkdtemp(prefix="featstore-bench-"))
    try:
        info, notes = machine_info(), []
        have_w = prepare_weights(args.weights_dir, work / "keras")
        data = args.data
        if not data.is_dir():
            n_syn = max([n_images, *mem_sizes])
            notes.append(f"data {data} absent: using {n_syn} SYNTHETIC 256x192 JPEGs (smooth random images)")
            log(notes[-1])
            data = make_synthetic(work / "synthetic", n_syn)
        weights = {b: "imagenet" if b == "mobilenet_v2" and have_w else "none" for b in names}
        for b, w in weights.items():
            why = "ImageNet, shared/weights" if w == "imagenet" else "random init: no ImageNet weights here"
            notes.append(f"{b}: weights={w!r} ({why})")
        print(f"featstore extraction benchmark, {time.strftime('%Y-%m-%d %H:%M')}")
        print(
            f"machine: {info['cores']} cores ({info['cores_usable']} usable), {info['cpu']}, {info['mem_gib']} GiB"
        )
        print(
            f"python {info['python']}, featstore {info['featstore']}, onnxruntime {info['onnxruntime']}, ",
            end="",
        )
        print(f"tensorflow {info['tensorflow']}, keras {info['keras']}")
        print(f"data: {data}; all runs on CPU, {SIZE_PX} px, batch {BATCH}")
        print("\n".join(f"note: {s}" for s in notes) + "\n", flush=True)

        backbones = work / "backbones"
        backbones.mkdir()
        subset, n_real = make_subset(data, work / f"{data.name}-{n_images}", n_images)
        results: dict = {"machine": info, "notes": notes, "targets": TARGETS, "backbones": []}
        results["config"] = {"n_images": n_real, "mem_sizes": mem_sizes, "batch": BATCH, "size_px": SIZE_PX}
        for b in names:
            results["backbones"].append(bench_backbone(b, weights[b], subset, work, backbones))
        if mem_sizes and names:
            runs = []
            for n in mem_sizes:
                log(f"memory: extract {n} images with {names[0]} in a fresh subprocess")
                sub, _ = make_subset(data, work / f"{data.name}-mem{n}", n)
                store = fresh_store(work / f"store-mem{n}", backbones)
                runs.append(run_child(n, sub, store, names[0], weights[names[0]]))
            ratio = runs[-1]["peak_kib"] / runs[0]["peak_kib"]
            results["memory"] = {"backbone": names[0], "runs": runs, "ratio": ratio}
        print(report(results), flush=True)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2, default=str) + "\n")
        print(f"numbers written to {RESULTS.relative_to(REPO)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
