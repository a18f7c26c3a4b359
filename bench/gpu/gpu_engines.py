"""Engines of the GPU bench: featstore's ONNX Runtime sessions, PyTorch's torchvision networks,
the fp16 models, the inputs, and the timing in alternating rounds.

Part of bench/gpu (see README.md); imports numpy, onnxruntime and featstore; torch and
torchvision only for the PyTorch engines.
"""

from __future__ import annotations

import gc
import json
import sys
import time
from pathlib import Path

import numpy as np
from gpu_record import Bench

#: torchvision network and Keras preprocessing of each bench backbone (scale, shift per RGB channel
#: applied to 0..255 pixels; PyTorch does the same amount of work as the folded ONNX preprocess).
TORCH_NETS = {
    "resnet50": ("resnet50", "caffe"),
    "mobilenet_v2": ("mobilenet_v2", "tf"),
    "vgg16": ("vgg16", "caffe"),
    "efficientnet_b0": ("efficientnet_b0", "none"),
}


def model_info(models: Path, name: str) -> dict:
    """Input size, features and GFLOPs per image of `models/<name>.onnx` (models.json when there)."""
    import onnx

    path = models / f"{name}.onnx"
    meta = {}
    listing = models / "models.json"
    if listing.is_file():
        meta = json.loads(listing.read_text()).get(name, {})
    m = onnx.load(str(path), load_external_data=False)
    dims = m.graph.input[0].type.tensor_type.shape.dim
    size = dims[1].dim_value
    gflops = meta.get("gflops")
    if gflops is None:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from bundle import count_flops

        gflops = count_flops(m) / 1e9
    return {"path": path, "size": int(size), "gflops": float(gflops), "n_features": meta.get("n_features")}


def load_photos(photos: Path, size: int, n: int) -> np.ndarray:
    """(n, size, size, 3) uint8: the first `n` photos (sorted), squashed to size x size."""
    from PIL import Image

    files = sorted(p for p in photos.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:n]
    out = np.empty((len(files), size, size, 3), np.uint8)
    for i, f in enumerate(files):
        with Image.open(f) as im:
            out[i] = np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR))
    return out


def random_batches(batch: int, size: int, n_sets: int = 2, seed: int = 0) -> list[np.ndarray]:
    """`n_sets` batches of random uint8 pixels (never zeros; rotated so no run sees a cached input)."""
    rng = np.random.default_rng(seed + batch)
    return [rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8) for _ in range(n_sets)]


def fp16_model(fp32: Path, work: Path, notes: dict | None = None) -> Path:
    """featstore's fp16 conversion of `fp32` (uint8 in, float32 out kept), cached in `work`.

    When onnxruntime refuses the converted model for duplicate node names (the converter's
    casts around the folded caffe preprocess), the exact duplicates are dropped so the rows can
    still be measured, and `notes[<model>]` says so (kept beside the model as `.note`):
    featstore itself needs the same fix.
    """
    out = work / f"{fp32.stem}.fp16.onnx"
    note = out.with_suffix(".note")
    if not out.is_file():
        import onnxruntime as ort

        from featstore.inference.quantize import convert_fp16

        work.mkdir(parents=True, exist_ok=True)
        note.unlink(missing_ok=True)
        tmp = work / f".{out.name}"
        convert_fp16(fp32, tmp)
        try:
            ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own types
            if "same node name" not in str(err):
                raise
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            from bundle import drop_duplicate_nodes

            n = drop_duplicate_nodes(tmp)
            note.write_text(
                f"featstore's fp16 model is invalid ({str(err).split('Error: ')[-1][:160]}); "
                f"the bench dropped {n} duplicate nodes to measure it"
            )
        tmp.replace(out)
    if notes is not None and note.is_file():
        notes[fp32.stem] = note.read_text()
    return out


def ort_engine(path: Path, device: str, n_threads: int | None = None):
    """featstore's session (`featstore.inference.onnxruntime_runtime.open_session`): host uint8 in, host float32 out;
    on CUDA with IO binding. Returns (run, session)."""
    from featstore.inference.onnxruntime_runtime import open_session

    session = open_session(path, device=device, n_threads=n_threads)
    return session.run, session


def torch_engine(name: str, fp16: bool):
    """torchvision's `name` without its classifier, global average pooling last, eval,
    channels_last, on CUDA; fp16 through autocast. Returns run: host uint8 NHWC -> host float32."""
    import torch
    import torchvision
    from torch import nn

    tv_name, mode = TORCH_NETS[name]
    net = getattr(torchvision.models, tv_name)(weights=None)
    if tv_name == "resnet50":
        net.fc = nn.Identity()
        body = net
    else:
        body = nn.Sequential(net.features, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    if mode == "caffe":
        scale, shift = [1.0, 1.0, 1.0], [-123.68, -116.779, -103.939]
    elif mode == "tf":
        scale, shift = [1 / 127.5] * 3, [-1.0] * 3
    else:
        scale, shift = (
            [1 / 255 / s for s in (0.229, 0.224, 0.225)],
            [-m / s for m, s in ((0.485, 0.229), (0.456, 0.224), (0.406, 0.225))],
        )

    class Backbone(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = body
            self.register_buffer("scale", torch.tensor(scale).view(1, 3, 1, 1))
            self.register_buffer("shift", torch.tensor(shift).view(1, 3, 1, 1))

        def forward(self, x):
            x = x.permute(0, 3, 1, 2).float().contiguous(memory_format=torch.channels_last)
            return self.body(x * self.scale + self.shift)

    # cuDNN picks each convolution's algorithm by timing them, as ONNX Runtime's CUDA provider
    # does by default (cudnn_conv_algo_search EXHAUSTIVE)
    torch.backends.cudnn.benchmark = True
    model = Backbone().eval().cuda().to(memory_format=torch.channels_last)

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=fp16):
            y = model(torch.from_numpy(x).cuda())
            return y.float().cpu().numpy()

    return run


def time_once(run, xs: list[np.ndarray], min_s: float, max_iters: int = 200) -> float:
    """Images/s of `run` over batches `xs` (rotated), at least `min_s` seconds and 2 calls."""
    n, t0 = 0, time.perf_counter()
    while True:
        run(xs[n % len(xs)])
        n += 1
        elapsed = time.perf_counter() - t0
        if (elapsed >= min_s and n >= 2) or n >= max_iters:
            return n * len(xs[0]) / elapsed


def alternate(
    b: Bench, name: str, batch: int, request: str, engines: dict, xs, info, rounds: int, min_s: float
):
    """Warm every engine, then time them in alternating rounds; record one row per engine."""
    for label, run in list(engines.items()):
        try:
            t0 = time.perf_counter()
            run(xs[0])
            run(xs[1 % len(xs)])
            b.log(f"{name} b{batch} {label}: warm-up {time.perf_counter() - t0:.2f} s")
        except Exception as err:  # noqa: BLE001 - e.g. out of memory; the others go on
            b.error(f"{name} b{batch} {label} warm-up", err)
            engines.pop(label)
    per: dict[str, list[float]] = {label: [] for label in engines}
    for _ in range(rounds):
        for label, run in engines.items():
            per[label].append(time_once(run, xs, min_s))
    for label, ips in per.items():
        engine, precision = label.rsplit(" ", 1)
        med = float(np.median(ips))
        tflops = med * info["gflops"] / 1e3
        peak = b.data["card"].get("peak_fp16_dense_tflops") if "cuda" in engine else None
        row = {
            "backbone": name,
            "engine": engine,
            "precision": precision,
            "batch": batch,
            "batch_request": request,
            "images_per_s": round(med, 1),
            "rounds": [round(x, 1) for x in ips],
            "spread": round((max(ips) - min(ips)) / med, 3) if med else None,
            "ms_per_batch": round(1000 * batch / med, 3) if med else None,
            "gflops_per_image": round(info["gflops"], 3),
            "tflops": round(tflops, 2),
            "share_of_fp16_peak": round(tflops / peak, 4) if peak else None,
        }
        b.log(
            f"{name} b{batch} {label}: {med:,.0f} images/s ({row['tflops']} TFLOP/s) rounds {row['rounds']}"
        )
        b.add("raw", row)


def open_engines(b: Bench, name: str, fp32: Path | None, fp16: Path | None, with_torch: bool) -> dict:
    """ORT CUDA fp32/fp16 (featstore sessions; None leaves one out) and PyTorch fp32/fp16,
    those that open."""
    engines = {}
    for label, path in (("ort-cuda fp32", fp32), ("ort-cuda fp16", fp16)):
        if path is None:
            continue
        try:
            engines[label] = ort_engine(path, "cuda")[0]
        except Exception as err:  # noqa: BLE001 - recorded, the other engines go on
            b.error(f"{name} {label} session", err)
    if with_torch and name in TORCH_NETS:
        for label, half in (("torch-cuda fp32", False), ("torch-cuda fp16", True)):
            try:
                engines[label] = torch_engine(name, half)
            except Exception as err:  # noqa: BLE001 - recorded, the other engines go on
                b.error(f"{name} {label} model", err)
    return engines


def free_gpu() -> None:
    """Drop sessions and models of the last backbone; return PyTorch's cached blocks."""
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass
