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
from collections.abc import Callable
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
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    info = {"cores": os.cpu_count(), "cores_usable": usable, "cpu": cpu, "mem_gib": round(mem_gib, 1)}
    info.update(
        python=sys.version.split()[0], featstore=dist_version("featstore"), keras=dist_version("keras")
    )
    info.update(
        onnxruntime=dist_version("onnxruntime-gpu", "onnxruntime"), tensorflow=dist_version("tensorflow")
    )
    return info


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
    from featstore.data.scan import IMAGE_EXTENSIONS

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
    from featstore.data.decode import decode_image
    from featstore.data.scan import scan_dataset

    t0 = time.perf_counter()
    x = np.stack([decode_image(it.path.read_bytes(), SIZE_PX) for it in scan_dataset(data).items])
    return x, time.perf_counter() - t0


def cpu_seconds() -> tuple[float, float]:
    """Return (busy CPU seconds of the whole machine, CPU seconds of this process and its children)."""
    try:
        with open("/proc/stat") as f:
            v = [int(n) for n in f.readline().split()[1:9]]
    except OSError:
        v = [0] * 8
    t, busy = os.times(), (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")
    return busy, t.user + t.system + t.children_user + t.children_system


def timed(fn: Callable, *args: object, **kwargs: object) -> tuple:
    """Call `fn`; return (its result, wall seconds, share of all cores busy with other processes)."""
    (busy0, own0), t0 = cpu_seconds(), time.perf_counter()
    out = fn(*args, **kwargs)
    wall, (busy1, own1) = time.perf_counter() - t0, cpu_seconds()
    return out, wall, max(0.0, (busy1 - busy0) - (own1 - own0)) / (wall * (os.cpu_count() or 1))


def ort_pass(session, x: np.ndarray) -> np.ndarray:
    """Run `x` through the ONNX session in batches of 32; return the features."""
    return np.concatenate([session.run(x[i : i + BATCH]) for i in range(0, len(x), BATCH)])


def time_ort(session, x: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Warm up once, then time `ort_pass`; return (features, seconds, background load)."""
    session.run(x[:BATCH])
    return timed(ort_pass, session, x)


def time_keras(model, x: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Warm up once (full and last partial batch), then time `model.predict`; as `time_ort`."""
    model.predict(x[: BATCH + len(x) % BATCH], batch_size=BATCH, verbose=0)
    return timed(model.predict, x, batch_size=BATCH, verbose=0)


def rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Return ||a - b|| / ||b||."""
    return float(np.linalg.norm(a - b) / max(float(np.linalg.norm(b)), 1e-12))


def run_extract(data: Path, backbone: str, store: Path, weights: str, emissions: bool) -> tuple:
    """Call `featstore.extraction.job.extract` on CPU; return (ExtractResult, wall seconds, background load)."""
    from featstore.backbones.options import BackboneOptions
    from featstore.extraction.job import extract
    from featstore.inference.options import InferenceOptions
    from featstore.options import JobOptions

    return timed(
        extract,
        str(data),
        BackboneOptions(backbone, weights=weights, input_size=SIZE_PX),
        inference=InferenceOptions(device="cpu"),
        job=JobOptions(store=str(store), emissions=emissions),
    )


def proc_status_kib(key: str) -> int | None:
    """Return a kB field (VmRSS, VmHWM) of /proc/self/status, or None off Linux."""
    try:
        with open("/proc/self/status") as f:
            return next((int(ln.split()[1]) for ln in f if ln.startswith(key + ":")), None)
    except OSError:
        return None


def child_peak(args: argparse.Namespace) -> None:
    """Run one end-to-end extract in this fresh process and print its peak RSS as one JSON line."""
    for mod in ("featstore.extraction.job", "h5py", "onnxruntime", "PIL.Image"):
        importlib.import_module(mod)
    base_kib = proc_status_kib("VmRSS")
    res, secs, _ = run_extract(Path(args.data), args.backbones, Path(args.store_), args.weights_, False)
    # VmHWM is this process's own high-water mark; ru_maxrss survives fork+exec and can carry the parent's.
    hwm_kib = proc_status_kib("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"n_images": res.n_images, "n_computed": res.n_computed, "seconds": secs, "peak_kib": hwm_kib}
    out.update(base_kib=base_kib or 0, tf_imported="tensorflow" in sys.modules)
    print(json.dumps(out))


def run_child(data: Path, store: Path, backbone: str, weights: str) -> dict:
    """Measure peak RSS of extract on `data` in a fresh subprocess."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_child-peak", "--data", str(data)]
    cmd += ["--backbones", backbone, "--store-", str(store), "--weights-", weights]
    proc, _, bg = timed(subprocess.run, cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"memory child for {data.name} failed:\n{proc.stderr[-3000:]}")
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "bg_load": bg}


def table(title: str, header: list[str], rows: list[list[str]]) -> str:
    """Render a plain-text table under a title line."""
    cells = [header, *rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join([title, *lines, ""])


def verdict(value: float, target: float, higher: bool = True) -> str:
    """Return PASS when `value` meets `target` (at least it, or at most it when not `higher`), else MISS."""
    return "PASS" if (value >= target if higher else value <= target) else "MISS"


def bench_backbone(name: str, weights: str, subset: Path, work: Path, backbones: Path) -> dict:
    """Run sections 1-3 for one backbone and return its figures."""
    from featstore.backbones.export import build_keras_backbone, ensure_backbone
    from featstore.backbones.options import BackboneOptions
    from featstore.backbones.recipes import resolve_recipe
    from featstore.inference.onnxruntime_runtime import open_session
    from featstore.store.featuresets import FeatureSetReader
    from featstore.store.layout import resolve_store

    recipe = resolve_recipe(BackboneOptions(name, weights=weights, input_size=SIZE_PX))
    layout = resolve_store(fresh_store(work / f"x-{name}", backbones))
    exported, export_s, _ = timed(ensure_backbone, recipe, layout)
    log(f"{name}: exported to ONNX in {export_s:.1f} s; decoding {subset.name}")
    x, decode_s = decode_all(subset)
    r: dict = dict(backbone=name, weights=weights, export_s=export_s, n_images=len(x), decode_s=decode_s)
    session = open_session(exported.path, device="cpu")
    log(f"{name}: ORT, then Keras model.predict, on {len(x)} pre-decoded images")
    ort_feats, r["ort_s"], r["ort_bg"] = time_ort(session, x)
    model, _ = build_keras_backbone(recipe)
    keras_feats, r["keras_s"], r["keras_bg"] = time_keras(model, x)
    r["ort_keras_rel_diff"] = rel_diff(ort_feats, np.asarray(keras_feats))
    del model, keras_feats
    importlib.import_module("keras").backend.clear_session()
    gc.collect()

    log(f"{name}: end-to-end extract into a fresh store, then pure ORT again")
    store = fresh_store(work / f"store-{name}", backbones)
    res, r["extract_s"], r["extract_bg"] = run_extract(subset, name, store, weights, False)
    _, r["ort2_s"], r["ort2_bg"] = time_ort(session, x)
    with FeatureSetReader(res.path) as reader:
        r["extract_ort_rel_diff"] = rel_diff(reader.read_features(), ort_feats)
    r.update(n_computed=res.n_computed, extract_lib_ips=res.images_per_s)
    log(f"{name}: unchanged re-runs (emissions off, then on)")
    res2, r["rerun_s"], _ = run_extract(subset, name, store, weights, False)
    res3, r["rerun_em_s"], _ = run_extract(subset, name, store, weights, True)
    r.update(rerun_n_computed=res2.n_computed, rerun_em_n_computed=res3.n_computed)
    r["rerun_em_note"] = res3.emissions.note
    r.update({k + "_ips": len(x) / r[k + "_s"] for k in ("ort", "keras", "extract", "ort2")})
    r["ort_vs_keras"], r["extract_vs_ort"] = r["ort_ips"] / r["keras_ips"], r["extract_ips"] / r["ort2_ips"]
    r["rerun_speedup"] = r["extract_s"] / r["rerun_s"]
    r["rerun_em_speedup"] = r["extract_s"] / r["rerun_em_s"]
    return r


def report(results: dict) -> str:
    """Render the four section tables."""
    t, n = TARGETS, results["config"]["n_images"]
    pct, mib, f1 = "{:.0%}".format, "{:.0f}".format, "{:.1f}".format
    s1, s2, s3 = [], [], []
    for r in results["backbones"]:
        name, ratio, bg = r["backbone"], r["ort_vs_keras"], f"{pct(r['keras_bg'])} / {pct(r['ort_bg'])}"
        s1.append([name, r["weights"], f1(r["keras_ips"]), f1(r["ort_ips"]), f"{ratio:.2f}x"])
        s1[-1] += [f">= {t['ort_vs_keras']:.0f}x", verdict(ratio, t["ort_vs_keras"])]
        s1[-1] += [f"{r['ort_keras_rel_diff']:.1e}", bg]
        ratio, bg = r["extract_vs_ort"], f"{pct(r['extract_bg'])} / {pct(r['ort2_bg'])}"
        s2.append([name, f1(r["extract_ips"]), f1(r["extract_lib_ips"] or 0), f1(r["ort2_ips"]), pct(ratio)])
        s2[-1] += [f">= {pct(t['extract_vs_ort'])}", verdict(ratio, t["extract_vs_ort"])]
        s2[-1] += [mib(r["n_images"] / r["decode_s"]), f"{r['extract_ort_rel_diff']:.1e}", bg]
        ratio, target = r["rerun_speedup"], t["rerun_speedup"]
        s3.append([name, "first run", f"{r['extract_s']:.2f}", str(r["n_computed"]), "1x", "", ""])
        s3.append(["", "re-run", f"{r['rerun_s']:.3f}", str(r["rerun_n_computed"]), f"{ratio:.1f}x"])
        s3[-1] += [f">= {target:.0f}x", verdict(ratio, target)]
        s3.append(["", "re-run, emissions=True", f"{r['rerun_em_s']:.3f}", str(r["rerun_em_n_computed"])])
        s3[-1] += [f"{r['rerun_em_speedup']:.1f}x", "(info)", ""]
    h1 = "backbone,weights,Keras img/s,ORT img/s,ORT/Keras,target,result,rel diff,bg load".split(",")
    h2 = "backbone,extract img/s,(lib loop),pure ORT img/s,extract/ORT,target,result,decode img/s 1 thread"
    h2 = (h2 + ",rel diff,bg load").split(",")
    h3 = "backbone,run,seconds,computed,first/run,target,result".split(",")
    out = [
        table(f"1. ONNX Runtime vs Keras model.predict (CPU, batch {BATCH}, {n} pre-decoded images)", h1, s1),
        table(f"2. End-to-end extract (JPEG files -> HDF5, fresh store) vs pure ORT, {n} images", h2, s2),
        table(f"3. Unchanged re-run of extract vs first run, {n} images", h3, s3),
    ]
    if results.get("memory"):
        m = results["memory"]
        h4 = "images,peak RSS MiB,after imports MiB,extract adds MiB,seconds,img/s,bg load".split(",")
        s4 = [
            [str(c["n_images"]), mib(c["peak_kib"] / 1024), mib(c["base_kib"] / 1024)]
            + [mib((c["peak_kib"] - c["base_kib"]) / 1024), f"{c['seconds']:.1f}"]
            + [f"{c['n_images'] / c['seconds']:.1f}", pct(c["bg_load"])]
            for c in m["runs"]
        ]
        title = f"4. Peak RSS (VmHWM) of end-to-end extract, fresh subprocess each ({m['backbone']}, export reused)"
        a, b = m["runs"][0]["n_images"], m["runs"][-1]["n_images"]
        line = f"peak ratio {b}/{a} images: {m['ratio']:.3f}  target <= {t['mem_growth']:.2f}  "
        out.append(table(title, h4, s4) + line + verdict(m["ratio"], t["mem_growth"], higher=False) + "\n")
    out.append("rel diff: ||a - b|| / ||b|| of the features (ORT vs Keras; extract's HDF5 vs pure ORT)")
    out.append("bg load: share of all cores busy with OTHER processes while measuring (first / second)")
    return "\n".join(out)


def header(info: dict, data: Path, notes: list[str]) -> str:
    """Return the header lines naming the machine, the versions and the data."""
    return "\n".join(
        [
            f"featstore extraction benchmark, {time.strftime('%Y-%m-%d %H:%M')}",
            f"machine: {info['cores']} cores ({info['cores_usable']} usable), {info['cpu']}, {info['mem_gib']} GiB",
            f"python {info['python']}, featstore {info['featstore']}, onnxruntime {info['onnxruntime']}",
            f"tensorflow {info['tensorflow']}, keras {info['keras']}",
            f"data: {data}; every run on CPU, {SIZE_PX} px, batch {BATCH}",
            *(f"note: {s}" for s in notes),
            "",
        ]
    )


def parse_args() -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of class folders of JPEGs")
    p.add_argument("--weights-dir", type=Path, default=DEFAULT_WEIGHTS, help="holds the MobileNetV2 .h5")
    p.add_argument(
        "--backbones", default="mobilenet_v2,resnet50", help="comma-separated; memory uses the 1st"
    )
    p.add_argument("--n-images", type=int, default=1000, help="images for sections 1-3")
    p.add_argument("--mem-sizes", default="1000,4000", help="dataset sizes for the memory section")
    p.add_argument("--quick", action="store_true", help="smoke run: 64 images, memory at 200/400")
    p.add_argument("--no-memory", action="store_true", help="skip section 4")
    p.add_argument("--_child-peak", action="store_true", dest="child_peak", help=argparse.SUPPRESS)
    p.add_argument("--store-", dest="store_", help=argparse.SUPPRESS)
    p.add_argument("--weights-", dest="weights_", help=argparse.SUPPRESS)
    return p.parse_args()


def prepare_data(args: argparse.Namespace, work: Path, names: list[str], n_synthetic: int) -> tuple:
    """(data folder, weights per backbone, notes): the real data or synthetic JPEGs, and ImageNet
    weights for mobilenet_v2 when shared/weights has them (random init otherwise)."""
    info_notes, data = [], args.data
    have_w = prepare_weights(args.weights_dir, work / "keras")
    if not data.is_dir():
        info_notes.append(
            f"{data} absent: using {n_synthetic} SYNTHETIC 256x192 JPEGs (smooth random images)"
        )
        log(info_notes[-1])
        data = make_synthetic(work / "synthetic", n_synthetic)
    weights = {b: "imagenet" if b == "mobilenet_v2" and have_w else "none" for b in names}
    for b, w in weights.items():
        why = "ImageNet, from shared/weights" if w == "imagenet" else "random init: no ImageNet weights here"
        info_notes.append(f"{b}: weights={w!r} ({why})")
    return data, weights, info_notes


def bench_memory(data: Path, work: Path, backbones: Path, name: str, weights: str, sizes: list[int]) -> dict:
    """Peak memory of extract on `sizes` images, each in a fresh subprocess; the last/first ratio."""
    runs = []
    for n in sizes:
        log(f"memory: extract {n} images with {name} in a fresh subprocess")
        sub, _ = make_subset(data, work / f"{data.name}-mem{n}", n)
        store = fresh_store(work / f"store-mem{n}", backbones)
        runs.append(run_child(sub, store, name, weights))
    return {"backbone": name, "runs": runs, "ratio": runs[-1]["peak_kib"] / runs[0]["peak_kib"]}


def main() -> None:
    """Run the benchmark (or, with --_child-peak, one memory measurement)."""
    args = parse_args()
    if args.child_peak:
        child_peak(args)
        return
    n_images, mem_sizes = args.n_images, [int(s) for s in args.mem_sizes.split(",")]
    if args.quick:
        n_images, mem_sizes = 64, [200, 400]
    mem_sizes = [] if args.no_memory else mem_sizes
    names = [b.strip() for b in args.backbones.split(",") if b.strip()]
    work = Path(tempfile.mkdtemp(prefix="featstore-bench-"))
    try:
        info = machine_info()
        data, weights, notes = prepare_data(args, work, names, max([n_images, *mem_sizes]))
        print(header(info, data, notes), flush=True)
        backbones = work / "backbones"
        backbones.mkdir()
        subset, n_real = make_subset(data, work / f"{data.name}-{n_images}", n_images)
        results: dict = {"machine": info, "notes": notes, "targets": TARGETS, "backbones": []}
        results["config"] = {"n_images": n_real, "mem_sizes": mem_sizes, "batch": BATCH, "size_px": SIZE_PX}
        for b in names:
            results["backbones"].append(bench_backbone(b, weights[b], subset, work, backbones))
        if mem_sizes and names:
            results["memory"] = bench_memory(data, work, backbones, names[0], weights[names[0]], mem_sizes)
        print(report(results), flush=True)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2, default=str) + "\n")
        print(f"numbers written to {RESULTS.relative_to(REPO)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
