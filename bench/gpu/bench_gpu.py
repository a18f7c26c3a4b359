"""GPU bench: featstore's ONNX Runtime CUDA path against PyTorch on the same card, in one process.

Runs on the device machine (after `run_device.sh` installed onnxruntime-gpu and rebuilt the
models), and, with `--cpu-only`, here: the CPU rows, the CPU end-to-end extract and the
`--device tensorrt` check. Imports numpy, onnxruntime and featstore (never TensorFlow); torch
and torchvision only for the PyTorch rows. Every row is written to `<out>/gpu-results.json` as
soon as it is measured and every step to `<out>/bench.log`, so a run cut off by its time limit
still returns what it measured. Sections run in priority order within `--budget-s`:

A. the check models (real weights), then per backbone: cosine of CUDA fp32 and fp16 features
   against CPU fp32 on real photos, then at batch 128 ORT CUDA fp32, ORT CUDA fp16, PyTorch
   fp32 and PyTorch fp16 (autocast, channels_last, eval), alternating rounds, host uint8
   batch in, host features out;
B. end-to-end `featstore extract` on the photos (16 decode threads, --profile, batch auto),
   CUDA fp32 and fp16 and CPU fp32, and the cosine of the CUDA features against the CPU ones;
C. `--device tensorrt` on a machine without TensorRT: a one-line error, no traceback;
E. ORT CPU (one thread per core) at batch 32 (what auto picks on the CPU) and 128;
D. per backbone, batch auto (featstore's probe picks it; PyTorch runs the same batch), then 32;
F. ORT CUDA fp16 with prefer_nhwc (a plain ORT session), a lead for the fixes.

Usage (on the device, from run_device.sh)::

    python bench/gpu/bench_gpu.py --models /tmp/gpu/models --photos /tmp/gpu/photos --out $OUT
    python bench/gpu/bench_gpu.py --cpu-only --models DIR --photos DIR --out DIR   # here
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_engines import (  # noqa: E402 - the sibling modules, found through the line above
    alternate,
    fp16_model,
    free_gpu,
    load_photos,
    model_info,
    open_engines,
    ort_engine,
    random_batches,
)
from gpu_record import SUMMARY, Bench, compare, describe_env, summary  # noqa: E402

DEFAULT_BACKBONES = ("resnet50", "mobilenet_v2", "efficientnet_b0", "vgg16")


def correctness(b: Bench, args, name: str, info: dict, engines: dict) -> None:
    """Cosine of the CUDA fp32 and fp16 features of `args.n_check` photos against ORT CPU fp32."""
    pixels = load_photos(args.photos, info["size"], args.n_check)
    ref = ort_engine(info["path"], "cpu")[0](pixels)
    for label, prec in (("ort-cuda fp32", "fp32"), ("ort-cuda fp16", "fp16")):
        if label in engines:
            compare(b, name, f"{label} vs ort-cpu fp32", prec, engines[label](pixels), ref)


def section_a(b: Bench, args, infos: dict, with_torch: bool, checks: dict | None = None) -> None:
    """Correctness of the check models (real weights), then correctness and batch 128 for
    every backbone."""
    for name, info in (checks or {}).items():
        try:
            fp16 = fp16_model(info["path"], args.work, b.data["fp16_notes"])
            correctness(b, args, name, info, open_engines(b, name, info["path"], fp16, False))
        except Exception as err:  # noqa: BLE001 - recorded, the next model goes on
            b.error(f"A check {name}", err)
        finally:
            free_gpu()
    for name, info in infos.items():
        if b.left() < args.reserve_s:
            b.skip(f"A {name}", f"{b.left():.0f} s left, kept for the end-to-end runs")
            continue
        try:
            fp16 = fp16_model(info["path"], args.work, b.data["fp16_notes"])
            engines = open_engines(b, name, info["path"], fp16, with_torch)
            correctness(b, args, name, info, engines)
            xs = random_batches(128, info["size"])
            alternate(b, name, 128, "128", engines, xs, info, args.rounds, args.min_s)
        except Exception as err:  # noqa: BLE001 - recorded, the next backbone goes on
            b.error(f"A {name}", err)
        finally:
            engines = None
            free_gpu()


def section_d(b: Bench, args, infos: dict, with_torch: bool) -> None:
    """Batch auto (featstore's probe picks it; PyTorch runs the same batch), then batch 32, for
    every backbone."""
    from featstore.inference.devices import choose_batch_size

    for name, info in infos.items():
        if b.left() < args.tail_s:
            b.skip(f"D {name}", f"{b.left():.0f} s left")
            continue
        try:
            fp16 = fp16_model(info["path"], args.work, b.data["fp16_notes"])
            torch_runs = {k: v for k, v in open_engines(b, name, None, None, with_torch).items()}
            for prec, path in (("fp32", info["path"]), ("fp16", fp16)):
                run, session = ort_engine(path, "cuda")
                t0 = time.perf_counter()
                batch = choose_batch_size(session, info["size"])
                probe_s = time.perf_counter() - t0
                b.log(f"{name} {prec}: featstore's probe picked batch {batch} in {probe_s:.1f} s")
                b.add(
                    "auto_batch",
                    {"backbone": name, "precision": prec, "batch": batch, "probe_s": round(probe_s, 2)},
                )
                chosen = {f"ort-cuda {prec}": run}
                if f"torch-cuda {prec}" in torch_runs:
                    chosen[f"torch-cuda {prec}"] = torch_runs[f"torch-cuda {prec}"]
                xs = random_batches(batch, info["size"])
                alternate(b, name, batch, "auto", chosen, xs, info, args.rounds, args.min_s)
                run = session = chosen = xs = None
                free_gpu()
            if b.left() < args.tail_s:
                b.skip(f"D {name} b32", f"{b.left():.0f} s left")
                continue
            engines = {**open_engines(b, name, info["path"], fp16, False), **torch_runs}
            alternate(
                b, name, 32, "32", engines, random_batches(32, info["size"]), info, args.rounds, args.min_s
            )
        except Exception as err:  # noqa: BLE001 - recorded, the next backbone goes on
            b.error(f"D {name}", err)
        finally:
            engines = torch_runs = None
            free_gpu()


def section_e(b: Bench, args, infos: dict) -> None:
    """ORT CPU, one thread per core, batch 32 and 128."""
    for name, info in infos.items():
        for batch in args.cpu_batches:
            if b.left() < args.tail_s / 2:
                b.skip(f"E {name} b{batch}", f"{b.left():.0f} s left")
                continue
            try:
                run, session = ort_engine(info["path"], "cpu", n_threads=os.cpu_count())
                request = "auto" if batch == 32 else str(batch)
                alternate(
                    b,
                    name,
                    batch,
                    request,
                    {"ort-cpu fp32": run},
                    random_batches(batch, info["size"]),
                    info,
                    max(1, args.rounds - 1),
                    args.min_s,
                )
            except Exception as err:  # noqa: BLE001 - recorded, the next row goes on
                b.error(f"E {name} b{batch}", err)


def section_f(b: Bench, args, infos: dict) -> None:
    """ORT CUDA fp16 with prefer_nhwc=1 (plain ORT session, IO binding as featstore does)."""
    import onnxruntime as ort

    for name, info in infos.items():
        if b.left() < args.tail_s:
            b.skip(f"F {name}", f"{b.left():.0f} s left")
            continue
        try:
            path = fp16_model(info["path"], args.work, b.data["fp16_notes"])
            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            sess = ort.InferenceSession(
                str(path),
                opts,
                providers=[("CUDAExecutionProvider", {"prefer_nhwc": "1"}), "CPUExecutionProvider"],
            )
            if sess.get_providers()[0] != "CUDAExecutionProvider":  # ORT falls back to the CPU silently
                raise RuntimeError(f"the CUDA provider did not load (active: {sess.get_providers()})")
            inp, out = sess.get_inputs()[0].name, sess.get_outputs()[0].name

            def run(x, sess=sess, inp=inp, out=out):
                binding = sess.io_binding()
                binding.bind_ortvalue_input(inp, ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0))
                binding.bind_output(out, "cpu")
                sess.run_with_iobinding(binding)
                return binding.get_outputs()[0].numpy()

            alternate(
                b,
                name,
                128,
                "128",
                {"ort-cuda-nhwc fp16": run},
                random_batches(128, info["size"]),
                info,
                args.rounds,
                args.min_s,
            )
            b.data["variants"].append(
                {"backbone": name, "variant": "prefer_nhwc=1", "see": "raw rows engine ort-cuda-nhwc"}
            )
        except Exception as err:  # noqa: BLE001 - the option may be unknown to this build
            b.error(f"F {name}", err)
        finally:
            sess = None
            free_gpu()


def featstore_cli(args_list: list[str], timeout_s: float) -> subprocess.CompletedProcess:
    """Run `python -m featstore_cli ...` with this environment."""
    cmd = [sys.executable, "-m", "featstore_cli", *args_list]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=max(5.0, timeout_s))


def warm_subset(photos: Path, dest: Path, n: int = 8) -> Path:
    """A small class-folder copy of `photos` (imports the backbone, converts fp16 before timing)."""
    import shutil

    if dest.is_dir():
        return dest
    files = sorted(p for p in photos.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    for f in files[:: max(1, len(files) // n)][:n]:
        (dest / f.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(f, dest / f.parent.name / f.name)
    return dest


E2E_KEYS = (
    "n_images",
    "n_computed",
    "images_per_s",
    "seconds",
    "batch_size",
    "decoder",
    "device",
    "feature_set",
    "path",
)


def e2e_run(b: Bench, args, name: str, model: Path, device: str, prec: str) -> dict | None:
    """One `featstore extract --profile` of the photos (after a run on a few photos that imports
    the backbone and makes its fp16 model); record and return its row."""
    if b.left() < 20:
        b.skip(f"B {name} {device} {prec}", f"{b.left():.0f} s left")
        return None
    common = ["--backbone", str(model), "--store", str(args.work / "store"), "--device", device]
    common += ["--precision", prec, "--workers", str(args.workers), "--batch-size", "auto"]
    common += ["--no-emissions", "--quiet", "--json"]
    warm = warm_subset(args.photos, args.work / "warm")
    row = {"backbone": name, "device": device, "precision": prec}
    try:
        t0 = time.perf_counter()
        proc = featstore_cli(
            ["extract", "--data", str(warm), "--name", f"warm-{device}-{prec}", *common], b.left()
        )
        row["warm_run_s"] = round(time.perf_counter() - t0, 2)
        if proc.returncode == 0:
            t0 = time.perf_counter()
            tag = f"photos-{name}-{device}-{prec}"
            proc = featstore_cli(
                ["extract", "--data", str(args.photos), "--name", tag, "--profile", *common], b.left()
            )
            row["wall_s"] = round(time.perf_counter() - t0, 2)
        else:
            row["failed_in"] = "the warm-up run on a few photos"
        row["rc"] = proc.returncode
        if proc.returncode == 0:
            res = json.loads(proc.stdout)
            row.update({k: res.get(k) for k in E2E_KEYS})
            row["profile"] = res.get("profile") or {}
            row["bound"] = bound_by(row["profile"])
            b.log(
                f"e2e {name} {device} {prec}: {row['images_per_s']} images/s, batch {row['batch_size']}, "
                f"{row['decoder']}, {row['bound']}"
            )
        else:
            row["stderr"] = proc.stderr[-2000:]
            b.log(f"e2e {name} {device} {prec}: rc {proc.returncode}: {proc.stderr.strip()[-300:]}")
        b.add("e2e", row)
        return row
    except Exception as err:  # noqa: BLE001 - recorded, the next run goes on
        b.error(f"B {name} {device} {prec}", err)
        return None


def section_b(b: Bench, args, infos: dict, cuda: bool) -> None:
    """End-to-end `featstore extract` with --profile, and the cosine of CUDA against CPU features;
    when fp16 fails on the first backbone, CUDA fp32 and fp16 again on `--e2e-fallback`."""
    name = args.e2e_backbone if args.e2e_backbone in infos else next(iter(infos))
    runs = [("cuda", "fp32"), ("cuda", "fp16"), ("cpu", "fp32")] if cuda else [("cpu", "fp32")]
    sets = {}
    for device, prec in runs:
        row = e2e_run(b, args, name, infos[name]["path"], device, prec)
        if row and row.get("rc") == 0:
            sets[(device, prec)] = row["path"]
    ref = sets.get(("cpu", "fp32"))
    for key, path in sets.items():
        if key == ("cpu", "fp32") or not ref:
            continue
        try:
            got, want = read_features(path), read_features(ref)
            common = sorted(set(got) & set(want))
            what = f"e2e extract {key[0]} {key[1]} vs cpu fp32"
            compare(
                b, name, what, key[1], np.stack([got[p] for p in common]), np.stack([want[p] for p in common])
            )
        except Exception as err:  # noqa: BLE001 - recorded
            b.error(f"B compare {key}", err)
    other = args.e2e_fallback
    if cuda and ("cuda", "fp16") not in sets and other in infos and other != name and b.left() > 60:
        b.log(f"e2e fp16 failed on {name}: CUDA fp32 and fp16 on {other} instead")
        for device, prec in (("cuda", "fp32"), ("cuda", "fp16")):
            e2e_run(b, args, other, infos[other]["path"], device, prec)


def bound_by(profile: dict) -> str:
    """'decode-bound' when the main thread waited for decoded images longer than it ran the model."""
    if not profile:
        return "unknown"
    wait = profile.get("wait_s") or 0.0
    busy = (profile.get("inference_s") or 0.0) + (profile.get("transfer_s") or 0.0)
    return "decode-bound" if wait > busy else "inference-bound"


def read_features(path: str) -> dict[str, np.ndarray]:
    """{relative path: feature row} of a feature set file."""
    import h5py

    with h5py.File(path, "r") as f:
        paths = [p.decode() if isinstance(p, bytes) else str(p) for p in f["paths"][:]]
        return dict(zip(paths, f["features"][:], strict=True))


def section_c(b: Bench, args, infos: dict) -> None:
    """`featstore extract --device tensorrt` where TensorRT is absent: exit 1 and one `Error:` line."""
    model = next(iter(infos.values()))["path"]
    warm = warm_subset(args.photos, args.work / "warm")
    cmd = [
        "extract",
        "--backbone",
        str(model),
        "--data",
        str(warm),
        "--name",
        "trt",
        "--store",
        str(args.work / "store"),
    ]
    cmd += ["--device", "tensorrt", "--no-emissions", "--quiet"]
    try:
        proc = featstore_cli(cmd, min(120.0, max(b.left(), 30.0)))
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        row = {
            "rc": proc.returncode,
            "stderr_tail": lines[-5:],
            "error_line": next((ln for ln in lines if ln.startswith("Error:")), None),
            "traceback": "Traceback" in proc.stderr,
        }
        row["clear"] = row["rc"] == 1 and row["error_line"] is not None and not row["traceback"]
        b.log(f"--device tensorrt: rc {row['rc']}, clear {row['clear']}: {row['error_line']}")
        b.data["tensorrt"] = row
        b.save()
    except Exception as err:  # noqa: BLE001 - recorded
        b.error("C tensorrt", err)


# --------------------------------------------------------------------------- summary


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", type=Path, required=True, help="folder of <backbone>.onnx (and models.json)")
    ap.add_argument("--photos", type=Path, required=True, help="class folders of photos")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "bench-gpu-out")))
    ap.add_argument(
        "--work", type=Path, default=None, help="scratch folder [default: <out>/../bench-gpu-work]"
    )
    ap.add_argument("--backbones", default=",".join(DEFAULT_BACKBONES))
    ap.add_argument(
        "--check-models", default="mobilenet_v2_imagenet", help="models (real weights) checked, not timed"
    )
    ap.add_argument("--e2e-backbone", default="resnet50")
    ap.add_argument("--e2e-fallback", default="efficientnet_b0", help="end to end again here when fp16 fails")
    ap.add_argument(
        "--cpu-only", action="store_true", help="no CUDA, no PyTorch: CPU rows, CPU extract, tensorrt check"
    )
    ap.add_argument("--budget-s", type=float, default=300.0, help="stop starting work after this long")
    ap.add_argument("--reserve-s", type=float, default=110.0, help="seconds section A leaves for B and C")
    ap.add_argument(
        "--tail-s", type=float, default=25.0, help="seconds a later section needs to start one backbone"
    )
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--min-s", type=float, default=0.25, help="seconds per engine per round")
    ap.add_argument("--n-check", type=int, default=64, help="photos in the cosine check")
    ap.add_argument("--workers", type=int, default=16, help="decode threads of the end-to-end extract")
    ap.add_argument("--cpu-batches", default="32,128")
    args = ap.parse_args(argv)
    args.work = args.work or args.out.parent / "bench-gpu-work"
    args.cpu_batches = [int(x) for x in args.cpu_batches.split(",") if x]
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the sections in priority order; always leave results, log and summary under --out."""
    args = parse_args(argv)
    b = Bench(args.out, args.budget_s)
    b.data["args"] = {k: str(v) for k, v in vars(args).items()}
    try:
        cuda = describe_env(b, args.cpu_only)
        with_torch = cuda and b.data["env"]["cuda_available"]
        infos = {}
        for name in [n for n in args.backbones.split(",") if n]:
            try:
                infos[name] = model_info(args.models, name)
                b.data["models"][name] = {
                    k: str(v) if isinstance(v, Path) else v for k, v in infos[name].items()
                }
            except Exception as err:  # noqa: BLE001 - a missing model skips that backbone
                b.error(f"model {name}", err)
        checks = {}
        for name in [n for n in args.check_models.split(",") if n]:
            if (args.models / f"{name}.onnx").is_file():
                checks[name] = model_info(args.models, name)
                b.data["models"][name] = {
                    k: str(v) if isinstance(v, Path) else v for k, v in checks[name].items()
                }
        b.save()
        if not infos:
            raise SystemExit("no model to bench")
        if cuda:
            section_a(b, args, infos, with_torch, checks)
        else:
            b.skip(
                "A, D, F (CUDA rows)",
                "--cpu-only" if args.cpu_only else "no CUDA (torch or the CUDA provider missing)",
            )
        section_b(b, args, infos, cuda)
        section_c(b, args, infos)
        section_e(b, args, infos)
        if cuda:
            section_d(b, args, infos, with_torch)
            section_f(b, args, infos)
        b.data["finished"] = True
    except Exception as err:  # noqa: BLE001 - whatever happened, the results so far are kept
        b.error("bench", err)
    finally:
        b.save()
        text = summary(b)
        (args.out / SUMMARY).write_text(text)
        print(text, flush=True)
    return 0 if b.data["finished"] else 1


if __name__ == "__main__":
    sys.exit(main())
