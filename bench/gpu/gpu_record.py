"""Results of the GPU bench: the record written after every row, the log, the card, the summary.

Part of bench/gpu (see README.md); imports numpy, onnxruntime and, for the card, torch.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
import traceback
from pathlib import Path

import numpy as np

#: Dense fp16 tensor-core peak (TFLOP/s, vendor datasheets, SXM unless named), by device name.
PEAK_FP16_DENSE = (
    ("H200", 989.4),
    ("H100 NVL", 835.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.4),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
)
TRT_REFERENCE = {
    "backbone": "resnet50",
    "samples_per_s": 88700,
    "source": "NVIDIA's published MLPerf Inference v4.0 ResNet50 offline figure on one H100 (TensorRT)",
}
COSINE_MIN = {"fp32": 0.9999, "fp16": 0.999}
RESULTS = "gpu-results.json"
LOG = "bench.log"
SUMMARY = "summary.md"


class Bench:
    """Holds the results, writes them after each row, logs with elapsed seconds, keeps time."""

    def __init__(self, out: Path, budget_s: float):
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        self.t0 = time.perf_counter()
        self.deadline = self.t0 + budget_s
        self.data: dict = {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "budget_s": budget_s,
            "env": {},
            "card": {},
            "models": {},
            "correctness": [],
            "raw": [],
            "e2e": [],
            "tensorrt": None,
            "variants": [],
            "skipped": [],
            "errors": [],
            "fp16_notes": {},
            "auto_batch": [],
            "finished": False,
        }
        self._log = open(out / LOG, "a", buffering=1)

    def left(self) -> float:
        """Seconds left in the budget."""
        return self.deadline - time.perf_counter()

    def log(self, msg: str) -> None:
        """Print and append one line, prefixed with the elapsed seconds."""
        line = f"[{time.perf_counter() - self.t0:7.1f}s] {msg}"
        print(line, flush=True)
        self._log.write(line + "\n")

    def save(self) -> None:
        """Write the results file atomically."""
        self.data["elapsed_s"] = round(time.perf_counter() - self.t0, 1)
        tmp = self.out / f".{RESULTS}.tmp"
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        tmp.replace(self.out / RESULTS)

    def add(self, section: str, row: dict) -> None:
        """Append a row to `section` and save."""
        self.data[section].append(row)
        self.save()

    def skip(self, what: str, why: str) -> None:
        """Record something left out (time, no GPU, no torch)."""
        self.log(f"skip {what}: {why}")
        self.add("skipped", {"what": what, "why": why})

    def error(self, what: str, err: BaseException) -> None:
        """Record a failure with its traceback in the log; the bench goes on."""
        self.log(f"FAILED {what}: {type(err).__name__}: {err}")
        self._log.write(traceback.format_exc() + "\n")
        self.add("errors", {"what": what, "error": f"{type(err).__name__}: {err}"})


def describe_env(b: Bench, cpu_only: bool) -> bool:
    """Record versions, providers and the card (through PyTorch); return True when ONNX Runtime
    has its CUDA provider and the driver reports a GPU (PyTorch rows need `cuda_available` too)."""
    import onnxruntime as ort

    env = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "n_cpus": os.cpu_count(),
        "onnxruntime": ort.__version__,
        "onnxruntime_file": ort.__file__,
        "providers": ort.get_available_providers(),
        "numpy": np.__version__,
    }
    b.log(f"onnxruntime {ort.__version__} from {ort.__file__}")
    b.log(f"onnxruntime.get_available_providers() = {env['providers']}")
    try:
        import torch

        env["torch"] = torch.__version__
        env["torch_cuda"] = torch.version.cuda
        env["cuda_available"] = bool(torch.cuda.is_available())
        env["cudnn_allow_tf32"] = bool(torch.backends.cudnn.allow_tf32)
        env["torch_cudnn_benchmark"] = "set True by the PyTorch engines"
    except ImportError:
        env["torch"] = None
        env["cuda_available"] = False
    try:
        from featstore.inference.devices import gpu_count

        env["featstore_gpu_count"] = gpu_count()
    except Exception as err:  # noqa: BLE001 - recorded, the bench goes on
        env["featstore_gpu_count"] = f"error: {err}"
    b.data["env"] = env
    gpus = env["featstore_gpu_count"] if isinstance(env["featstore_gpu_count"], int) else 0
    cuda = not cpu_only and "CUDAExecutionProvider" in env["providers"] and gpus > 0
    if cuda and env["cuda_available"]:
        try:
            describe_card(b)
        except Exception as err:  # noqa: BLE001 - the rows can go on without the card's figures
            b.error("card", err)
    b.save()
    return bool(cuda)


def describe_card(b: Bench) -> None:
    """Name, memory, peak fp16 and a measured fp16 matrix-product rate of GPU 0."""
    import torch

    props = torch.cuda.get_device_properties(0)
    name = props.name
    peak = next((p for key, p in PEAK_FP16_DENSE if key in name), None)
    card = {
        "name": name,
        "memory_gib": round(props.total_memory / 2**30, 1),
        "sms": props.multi_processor_count,
        "peak_fp16_dense_tflops": peak,
        "trt_reference": TRT_REFERENCE,
    }
    try:
        q = "name,driver_version,clocks.sm,clocks.max.sm,power.limit,temperature.gpu"
        card["nvidia_smi"] = subprocess.run(
            ["nvidia-smi", f"--query-gpu={q}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        card["nvidia_smi"] = None
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.float16)
    c = torch.randn(n, n, device="cuda", dtype=torch.float16)
    for _ in range(3):
        a @ c
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(10):
        a @ c
    end.record()
    torch.cuda.synchronize()
    card["matmul_fp16_tflops"] = round(2 * n**3 * 10 / (start.elapsed_time(end) / 1000) / 1e12, 1)
    del a, c
    torch.cuda.empty_cache()
    card["slug"] = card_slug(name)
    b.data["card"] = card
    b.log(
        f"card {name}: peak fp16 dense {peak} TFLOP/s, measured fp16 matmul {card['matmul_fp16_tflops']} TFLOP/s"
    )


def card_slug(name: str) -> str:
    """`NVIDIA H100 80GB HBM3` -> `h100`, `NVIDIA H200` -> `h200` (the results file's suffix)."""
    for word in name.replace("-", " ").split():
        w = word.lower()
        if w[:1] in "ahlbt" and any(ch.isdigit() for ch in w) and w not in ("80gb", "hbm3", "hbm3e"):
            return w
    return "".join(ch for ch in name.lower() if ch.isalnum())[:16] or "gpu"


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-row cosine similarity of two (n, d) arrays (NaN for an all-zero row: features too
    small for fp16, as random MobileNetV2's, about 1e-10, come back as zeros)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(axis=1) / den


def compare(b: Bench, name: str, what: str, precision: str, got: np.ndarray, ref: np.ndarray) -> None:
    """Record the cosine and relative error of `got` against `ref` (CPU fp32)."""
    cos = cosine(got, ref)
    rel = float(np.linalg.norm(got - ref) / max(np.linalg.norm(ref), 1e-30))
    ok = bool(np.all(np.isfinite(got))) and float(cos.min()) >= COSINE_MIN[precision]
    row = {
        "backbone": name,
        "compare": what,
        "precision": precision,
        "n_images": len(got),
        "cosine_min": float(cos.min()),
        "cosine_mean": float(cos.mean()),
        "rel_error": rel,
        "ref_norm_mean": float(np.linalg.norm(ref.astype(np.float64), axis=1).mean()),
        "threshold": COSINE_MIN[precision],
        "pass": ok,
    }
    b.log(
        f"{name} {what}: cosine min {row['cosine_min']:.6f} mean {row['cosine_mean']:.6f} rel {rel:.2e} {'ok' if ok else 'FAIL'}"
    )
    b.add("correctness", row)


def summary(b: Bench) -> str:
    """Markdown tables of what was measured (also printed last, where the tool shows the tail)."""
    d = b.data
    lines = [f"# GPU bench: {d['card'].get('name') or 'CPU only'}", ""]
    if d["card"]:
        c = d["card"]
        lines += [
            f"peak fp16 dense {c.get('peak_fp16_dense_tflops')} TFLOP/s; measured fp16 matmul {c.get('matmul_fp16_tflops')} TFLOP/s",
            "",
        ]
    lines += [
        "| backbone | batch | engine | precision | images/s | TFLOP/s | share of peak | spread |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(d["raw"], key=lambda r: (r["backbone"], r["batch_request"], r["engine"], r["precision"])):
        share = f"{100 * r['share_of_fp16_peak']:.1f} %" if r.get("share_of_fp16_peak") else "-"
        lines.append(
            f"| {r['backbone']} | {r['batch']} ({r['batch_request']}) | {r['engine']} | {r['precision']} | "
            f"{r['images_per_s']:,.0f} | {r['tflops']} | {share} | {r['spread']} |"
        )
    lines += [
        "",
        "| end to end | device | precision | images/s | batch | decoder | bound | wall s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in d["e2e"]:
        lines.append(
            f"| {r['backbone']} | {r['device']} | {r['precision']} | {r.get('images_per_s')} | {r.get('batch_size')} | "
            f"{r.get('decoder')} | {r.get('bound')} | {r.get('wall_s')} |"
        )
    lines += ["", "| correctness | precision | cosine min | cosine mean | pass |", "|---|---|---|---|---|"]
    for r in d["correctness"]:
        lines.append(
            f"| {r['backbone']}: {r['compare']} | {r['precision']} | {r['cosine_min']:.6f} | {r['cosine_mean']:.6f} | {r['pass']} |"
        )
    if d["tensorrt"]:
        lines += [
            "",
            f"--device tensorrt: rc {d['tensorrt']['rc']}, clear {d['tensorrt']['clear']}: {d['tensorrt']['error_line']}",
        ]
    if d["errors"]:
        lines += ["", "errors:"] + [f"- {e['what']}: {e['error']}" for e in d["errors"]]
    if d["skipped"]:
        lines += ["", "skipped:"] + [f"- {s['what']}: {s['why']}" for s in d["skipped"]]
    return "\n".join(lines) + "\n"
