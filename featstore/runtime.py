"""ONNX Runtime sessions: providers, threads, and the check that a GPU asked for is really used.

Imports onnxruntime (light, no TensorFlow). Never falls back from a requested GPU to the CPU
silently: `--device cuda|tensorrt` either runs there or raises `DeviceError`.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from featstore.errors import DeviceError

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

DEVICES = ("auto", "cpu", "cuda", "tensorrt")
_PROVIDER = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
_GPU_HINT = 'pip install "featstore[gpu]" (CUDA 13 and cuDNN 9 libraries for onnxruntime-gpu)'


@lru_cache(maxsize=1)
def gpu_count() -> int:
    """Return how many NVIDIA GPUs the driver reports (0 without driver), loading no CUDA runtime."""
    for lib in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            cuda = ctypes.CDLL(lib)
        except OSError:
            continue
        count = ctypes.c_int(0)
        if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return 0
        return int(count.value)
    return 0


def default_threads() -> int:
    """Return the number of cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _ort():
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    return ort


def _providers_for(device: str, trt_cache_dir: Path | None) -> list:
    ort = _ort()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    available = ort.get_available_providers()
    wanted = _PROVIDER[device]
    if wanted not in available:
        raise DeviceError(
            f"--device {device} asked for, but this onnxruntime build has no {wanted} "
            f"(it has {', '.join(available)}); install onnxruntime-gpu: {_GPU_HINT}"
        )
    if gpu_count() == 0:
        raise DeviceError(
            f"--device {device} asked for, but no NVIDIA GPU is visible (the driver library "
            "libcuda.so.1 is missing or reports no device); use --device cpu or auto"
        )
    if hasattr(ort, "preload_dlls"):
        try:
            ort.preload_dlls()
        except Exception:  # noqa: BLE001 - a missing library is reported below, by name
            pass
    if device == "cuda":
        return [("CUDAExecutionProvider", {}), "CPUExecutionProvider"]
    options = {"trt_engine_cache_enable": "True", "trt_fp16_enable": "False"}
    if trt_cache_dir is not None:
        trt_cache_dir.mkdir(parents=True, exist_ok=True)
        options["trt_engine_cache_path"] = str(trt_cache_dir)
        options["trt_timing_cache_enable"] = "True"
        options["trt_timing_cache_path"] = str(trt_cache_dir)
    return [("TensorrtExecutionProvider", options), ("CUDAExecutionProvider", {}), "CPUExecutionProvider"]


def resolve_device(device: str) -> str:
    """Map `auto` to `cuda` when a GPU and a CUDA-enabled onnxruntime are present, else `cpu`."""
    if device not in DEVICES:
        raise DeviceError(f"--device must be one of {', '.join(DEVICES)}, not {device!r}")
    if device != "auto":
        return device
    if gpu_count() > 0 and "CUDAExecutionProvider" in _ort().get_available_providers():
        return "cuda"
    return "cpu"


@dataclass
class BackboneSession:
    """A live ONNX Runtime session over one backbone: uint8 pixels in, float32 features out."""

    session: object
    device: str
    providers: list[str]
    input_name: str
    input_dtype: np.dtype
    n_threads: int

    def run(self, pixels: np.ndarray) -> np.ndarray:
        """Run a batch: (N, H, W, 3) uint8 -> (N, n_features) float32."""
        x = pixels if self.input_dtype == np.uint8 else pixels.astype(self.input_dtype)
        out = self.session.run(None, {self.input_name: x})[0]
        out = np.asarray(out, dtype=np.float32)
        return out.reshape(out.shape[0], -1)


def open_session(
    model: str | os.PathLike | bytes,
    device: str = "auto",
    n_threads: int | None = None,
    trt_cache_dir: Path | None = None,
) -> BackboneSession:
    """Open an ONNX Runtime session on `device` (auto|cpu|cuda|tensorrt).

    Raises
    ------
    DeviceError
        A GPU device was asked for and the session did not get it.
    """
    ort = _ort()
    requested = device
    device = resolve_device(device)
    providers = _providers_for(device, trt_cache_dir)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    n_threads = n_threads or default_threads()
    opts.intra_op_num_threads = n_threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    src = model if isinstance(model, bytes) else str(model)
    try:
        sess = ort.InferenceSession(src, sess_options=opts, providers=providers)
    except Exception as err:  # noqa: BLE001 - onnxruntime raises its own exception types
        if device != "cpu" and requested == "auto":
            return open_session(model, "cpu", n_threads, trt_cache_dir)
        raise DeviceError(f"onnxruntime could not open the model on {device}: {err}") from err
    active = sess.get_providers()
    if device != "cpu" and active[0] != _PROVIDER[device]:
        if requested == "auto":
            return open_session(model, "cpu", n_threads, trt_cache_dir)
        raise DeviceError(
            f"--device {device} asked for, but onnxruntime could only activate "
            f"{', '.join(active)} (the CUDA or cuDNN libraries did not load); {_GPU_HINT}"
        )
    inp = sess.get_inputs()[0]
    dtype = {"tensor(uint8)": np.uint8, "tensor(float)": np.float32, "tensor(float16)": np.float16}
    if inp.type not in dtype:
        raise DeviceError(f"the model's input {inp.name} has type {inp.type}; expected uint8 or float")
    return BackboneSession(sess, device, active, inp.name, np.dtype(dtype[inp.type]), n_threads)
