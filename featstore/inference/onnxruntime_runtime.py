"""ONNX Runtime, the reference runtime: CPU, CUDA and TensorRT sessions (IO binding on a GPU). A
requested GPU runs or raises `DeviceError`, never a silent fallback to the CPU."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featstore.errors import DeviceError
from featstore.inference.devices import TRT_MAX_BATCH, default_threads, gpu_count
from featstore.inference.runtimes import Runtime, register_runtime

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

_PROVIDER = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
_GPU_HINT = 'pip install "featstore[gpu]" (CUDA 13 and cuDNN 9 libraries for onnxruntime-gpu)'


def _ort():
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    return ort


def _providers_for(device: str, trt: dict) -> list:
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
    return [("TensorrtExecutionProvider", trt), ("CUDAExecutionProvider", {}), "CPUExecutionProvider"]


def tensorrt_options(
    precision: str, trt_cache_dir: Path | None, prefix: str | None, shape: tuple[str, int] | None
) -> dict:
    """TensorRT provider options: engine and timing caches in `trt_cache_dir` named by `prefix`,
    kernels of `precision`, and one profile from batch 1 to `TRT_MAX_BATCH` for input `shape`
    = (name, size_px), so the last, partial batch reuses the engine."""
    options = {
        "trt_engine_cache_enable": "True",
        "trt_fp16_enable": "True" if precision == "fp16" else "False",
        "trt_int8_enable": "True" if precision == "int8" else "False",
    }
    if trt_cache_dir is not None:
        trt_cache_dir.mkdir(parents=True, exist_ok=True)
        options["trt_engine_cache_path"] = str(trt_cache_dir)
        options["trt_timing_cache_enable"] = "True"
        options["trt_timing_cache_path"] = str(trt_cache_dir)
    if prefix:
        options["trt_engine_cache_prefix"] = prefix
    if shape is not None:
        name, size = shape
        options["trt_profile_min_shapes"] = f"{name}:1x{size}x{size}x3"
        options["trt_profile_opt_shapes"] = f"{name}:{TRT_MAX_BATCH}x{size}x{size}x3"
        options["trt_profile_max_shapes"] = f"{name}:{TRT_MAX_BATCH}x{size}x{size}x3"
    return options


@dataclass
class OrtSession:
    """A live ONNX Runtime session over one backbone: uint8 pixels in, float32 features out.

    On a GPU, `run` binds input and output, so each batch crosses the bus once each way;
    `transfer_s` and `inference_s` add up the seconds of the copies and of the runs.
    """

    session: object
    device: str
    providers: list[str]
    input_name: str
    input_dtype: np.dtype
    n_threads: int
    precision: str = "fp32"
    transfer_s: float = 0.0
    inference_s: float = 0.0

    @property
    def on_gpu(self) -> bool:
        """True when the session runs on CUDA or TensorRT."""
        return self.device in ("cuda", "tensorrt")

    @property
    def runtime(self) -> str:
        """The runtime computing the features (`inference.openvino_runtime` has the other one)."""
        return "onnxruntime"

    def run(self, pixels: np.ndarray) -> np.ndarray:
        """Run a batch: (N, H, W, 3) uint8 -> (N, n_features) float32."""
        x = pixels if self.input_dtype == np.uint8 else pixels.astype(self.input_dtype)
        if self.on_gpu:
            out = self._run_bound(np.ascontiguousarray(x))
        else:
            t0 = time.perf_counter()
            out = self.session.run(None, {self.input_name: x})[0]
            self.inference_s += time.perf_counter() - t0
        out = np.asarray(out, dtype=np.float32)
        return out.reshape(out.shape[0], -1)

    def _run_bound(self, x: np.ndarray) -> np.ndarray:
        ort = _ort()
        t0 = time.perf_counter()
        on_card = ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0)
        t1 = time.perf_counter()
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(self.input_name, on_card)
        binding.bind_output(self.session.get_outputs()[0].name, "cpu")
        self.session.run_with_iobinding(binding)
        out = binding.get_outputs()[0].numpy()
        self.transfer_s += t1 - t0
        self.inference_s += time.perf_counter() - t1
        return out


def _input_shape(model: str | os.PathLike | bytes) -> tuple[str, int] | None:
    """(input name, square size) of an NHWC model, read without loading its weights."""
    import onnx

    try:
        m = (
            onnx.load_from_string(model)
            if isinstance(model, bytes)
            else onnx.load(str(model), load_external_data=False)
        )
    except Exception:  # noqa: BLE001 - the session reports unreadable models itself
        return None
    dims = m.graph.input[0].type.tensor_type.shape.dim
    size = dims[1].dim_value if len(dims) == 4 else 0
    return (m.graph.input[0].name, size) if size else None


def _session_options(ort, n_threads: int):
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = n_threads
    opts.inter_op_num_threads = 1
    # idle threads sleep instead of spinning: the decode threads get the cores they need, and
    # on a shared machine int8 ResNet50 ran 8 % faster and used 22 % less CPU per image
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return opts


def open_session(
    model: str | os.PathLike | bytes,
    device: str = "auto",
    n_threads: int | None = None,
    trt_cache_dir: Path | None = None,
    precision: str = "fp32",
    trt_prefix: str | None = None,
) -> OrtSession:
    """Open an ONNX Runtime session on `device` (auto|cpu|cuda|tensorrt); `precision` matters to
    TensorRT only, whose engines are cached in `trt_cache_dir` as `trt_prefix`. DeviceError
    when a GPU was asked for and the session did not get it."""
    ort = _ort()
    requested = device
    device = resolve_device(device)
    trt = {}
    if device == "tensorrt":
        trt = tensorrt_options(precision, trt_cache_dir, trt_prefix, _input_shape(model))
    providers = _providers_for(device, trt)
    n_threads = n_threads or default_threads()
    opts = _session_options(ort, n_threads)
    src = model if isinstance(model, bytes) else str(model)
    again = (model, "cpu", n_threads, trt_cache_dir, precision, trt_prefix)
    try:
        sess = ort.InferenceSession(src, sess_options=opts, providers=providers)
    except Exception as err:  # noqa: BLE001 - onnxruntime raises its own exception types
        if device != "cpu" and requested == "auto":
            return open_session(*again)
        raise DeviceError(f"onnxruntime could not open the model on {device}: {err}") from err
    active = sess.get_providers()
    if device != "cpu" and active[0] != _PROVIDER[device]:
        if requested == "auto":
            return open_session(*again)
        raise DeviceError(
            f"--device {device} asked for, but onnxruntime could only activate "
            f"{', '.join(active)} (the CUDA or cuDNN libraries did not load); {_GPU_HINT}"
        )
    inp = sess.get_inputs()[0]
    dtype = {"tensor(uint8)": np.uint8, "tensor(float)": np.float32, "tensor(float16)": np.float16}
    if inp.type not in dtype:
        raise DeviceError(f"the model's input {inp.name} has type {inp.type}; expected uint8 or float")
    return OrtSession(sess, device, active, inp.name, np.dtype(dtype[inp.type]), n_threads, precision)


def resolve_device(device: str) -> str:
    """`auto` is cuda where a GPU and a CUDA-enabled onnxruntime are present, else cpu; any other
    device is itself."""
    if device != "auto":
        return device
    if gpu_count() > 0 and "CUDAExecutionProvider" in _ort().get_available_providers():
        return "cuda"
    return "cpu"


def _ready(device: str) -> None:
    """Raise DeviceError when `device` (cuda, tensorrt) cannot be used by ONNX Runtime here."""
    if device != "cpu":
        _providers_for(device, {})


def _open(model, device: str, n_threads: int, *, precision="fp32", trt_cache_dir=None, trt_prefix=None, **_):
    return open_session(model, device, n_threads, trt_cache_dir, precision, trt_prefix)


register_runtime(
    Runtime(
        "onnxruntime",
        "ONNX Runtime",
        {"cpu": ("fp32", "int8"), "cuda": ("fp32", "int8", "fp16"), "tensorrt": ("fp32", "int8", "fp16")},
        _open,
        install="pip install onnxruntime (or onnxruntime-gpu)",
        ready=_ready,
        reference=True,
    )
)
