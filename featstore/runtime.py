"""ONNX Runtime sessions: providers, threads, batch sizes, and the check that a GPU asked for is
really used; `RuntimeOptions` (device, batch size, threads, engine, and which runtime runs a
backbone: ONNX Runtime or OpenVINO, whose sessions are `inference.openvino_runtime`'s).

A bottom-layer module: imports `errors` and `options` only, and onnxruntime (light, no
TensorFlow) inside the functions that open sessions. Never falls back from a requested GPU to
the CPU silently: device cuda or tensorrt either runs there or raises `DeviceError`.
"""

from __future__ import annotations

import ctypes
import os
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from featstore.errors import DeviceError, InvalidOptionError
from featstore.options import Options, check_choice

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

DEVICES = ("auto", "cpu", "cuda", "tensorrt")
ENGINES = ("local", "ray")
#: What runs a backbone: auto (OpenVINO on a CPU with native bf16 where it is installed, ONNX
#: Runtime otherwise and on every GPU; see `inference.sessions.resolve_runtime`), or either one.
RUNTIMES = ("auto", "onnxruntime", "openvino")
#: Batch size on the CPU (larger batches gain nothing there), the largest TensorRT batch
#: (engines are built for 1..TRT_MAX_BATCH), and the sizes tried on CUDA.
CPU_BATCH = 32
TRT_MAX_BATCH = 64
GPU_PROBE = (16, 32, 64, 128, 256, 512)
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


#: Channels assumed at full resolution when sizing the largest activation of one image (VGG's
#: first block has 64 at the input size; most networks have 32-64 at half of it).
_ACTIVATION_CHANNELS = 64
#: Bytes per activation value times the tensors alive at once (input, output, workspace).
_ACTIVATION_BYTES = 4 * 4
#: TensorFlow and ONNX Runtime kernels index tensors with 32-bit integers.
_MAX_TENSOR_VALUES = 2**31 - 1


def memory_bytes() -> int:
    """Physical memory of this machine in bytes (0 when the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def activation_bytes(size_px: int) -> int:
    """Bytes one image's largest activation takes at `size_px` (an upper estimate)."""
    return size_px * size_px * _ACTIVATION_CHANNELS * _ACTIVATION_BYTES


def max_input_size(memory: int | None = None) -> int:
    """Largest square input in px one image can take here: its largest activation must stay
    under 2**31 values and fit in `memory` bytes (default this machine's)."""
    memory = memory_bytes() if memory is None else memory
    limit = _MAX_TENSOR_VALUES / _ACTIVATION_CHANNELS
    if memory:
        limit = min(limit, memory / (_ACTIVATION_CHANNELS * _ACTIVATION_BYTES))
    return int(limit**0.5)


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
    """TensorRT provider options: engine and timing caches in `trt_cache_dir` (named by
    `prefix`), fp16 or int8 (explicit QDQ) kernels for that precision, and one optimisation
    profile from batch 1 to `TRT_MAX_BATCH` for input `shape` = (name, size_px), so the last,
    partial batch reuses the engine instead of building another."""
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


def engine_cached(trt_cache_dir: Path | None, prefix: str) -> bool:
    """True when a TensorRT engine named `prefix...` is already in the cache folder."""
    return trt_cache_dir is not None and any(trt_cache_dir.glob(f"{prefix}*.engine"))


@dataclass(frozen=True)
class RuntimeOptions(Options):
    """Where and how a backbone runs: `device` (auto, cpu, cuda, tensorrt), images per batch
    (`batch_size`, a number or auto), inference threads (`n_threads`, default one per core),
    the engine (local, or ray with `ray_address`), and the `runtime` (auto, onnxruntime or
    openvino)."""

    device: str = "auto"
    batch_size: int | str = "auto"
    n_threads: int | None = None
    engine: str = "local"
    ray_address: str | None = None
    runtime: str = "auto"

    def check(self) -> RuntimeOptions:
        """Raise InvalidOptionError for an unknown device, engine or runtime, a bad batch or thread
        count, or a Ray address without the ray engine (whether the device and runtime are usable
        here is `check_device`'s and `inference.sessions.resolve_runtime`'s question)."""
        _check_device_name(self.device)
        check_choice("runtime", self.runtime, RUNTIMES)
        if self.batch_size != "auto":
            try:
                ok = int(self.batch_size) >= 1
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise InvalidOptionError(
                    "batch_size", f"must be a whole number of at least 1, or auto; not {self.batch_size!r}"
                )
        if self.n_threads is not None and self.n_threads < 1:
            raise InvalidOptionError("n_threads", f"must be at least 1, not {self.n_threads}")
        check_choice("engine", self.engine, ENGINES)
        if self.ray_address and self.engine != "ray":
            raise InvalidOptionError("ray_address", "goes with engine ray, not local")
        return self

    @property
    def batch_auto(self) -> bool:
        """True when the batch size is chosen per device (`choose_batch_size`)."""
        return self.batch_size == "auto"

    def batch_or(self, default: int) -> int:
        """The batch size as a number, `default` when it is auto."""
        return default if self.batch_auto else int(self.batch_size)


def check_device(device: str) -> str:
    """Resolve `device` and check, without opening a session, that its provider and a GPU are
    there; return the resolved device.

    Raises
    ------
    InvalidOptionError
        An unknown device name.
    DeviceError
        cuda or tensorrt asked for where it cannot run.
    """
    device = resolve_device(device)
    if device != "cpu":
        _providers_for(device, {})
    return device


def _check_device_name(device: str) -> str:
    return check_choice("device", device, DEVICES)


def resolve_device(device: str) -> str:
    """Map `auto` to `cuda` when a GPU and a CUDA-enabled onnxruntime are present, else `cpu`.

    Raises
    ------
    InvalidOptionError
        An unknown device name (param `device`).
    """
    _check_device_name(device)
    if device != "auto":
        return device
    if gpu_count() > 0 and "CUDAExecutionProvider" in _ort().get_available_providers():
        return "cuda"
    return "cpu"


@dataclass
class BackboneSession:
    """A live ONNX Runtime session over one backbone: uint8 pixels in, float32 features out.

    On a GPU, `run` binds its input and output (IO binding): the uint8 batch is copied to
    the card once, the features come back once. `transfer_s` and `inference_s` add up the
    seconds of those copies and of the runs (on the CPU everything is inference).
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
) -> BackboneSession:
    """Open an ONNX Runtime session on `device` (auto|cpu|cuda|tensorrt).

    `precision` only matters to TensorRT (fp16 or int8 kernels); the model file itself is
    already in that precision for the CUDA and CPU providers. TensorRT engines are cached in
    `trt_cache_dir` under the name `trt_prefix`.

    Raises
    ------
    DeviceError
        A GPU device was asked for and the session did not get it.
    """
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
    return BackboneSession(sess, device, active, inp.name, np.dtype(dtype[inp.type]), n_threads, precision)


def choose_batch_size(session: BackboneSession, size_px: int, n_images: int | None = None) -> int:
    """Pick the batch size for `session`: `CPU_BATCH` on the CPU, `TRT_MAX_BATCH` with TensorRT
    (its engine's profile), and on CUDA the fastest of 16..512 images per batch that fits,
    probed with random pixels (doubling until a batch runs out of memory or gains < 5 %).
    Never more than `n_images` (rounded up to a power of two) when given. On the CPU, fewer when
    a batch of large inputs would take over a quarter of the memory."""
    if not session.on_gpu:
        fits = memory_bytes() // 4 // activation_bytes(size_px) if memory_bytes() else CPU_BATCH
        return int(max(1, min(CPU_BATCH, fits)))
    if session.device == "tensorrt":
        return TRT_MAX_BATCH
    cap = 1 << max(4, int(np.ceil(np.log2(max(n_images or GPU_PROBE[-1], 1)))))
    rng = np.random.default_rng(0)
    best, best_ips = GPU_PROBE[0], 0.0
    for b in (b for b in GPU_PROBE if b <= cap):
        x = rng.integers(0, 256, (b, size_px, size_px, 3), dtype=np.uint8)
        try:
            session.run(x)  # warm-up: allocations, algorithm search
            t0 = time.perf_counter()
            session.run(x)
            ips = b / (time.perf_counter() - t0)
        except Exception:  # noqa: BLE001 - out of memory surfaces as a runtime error
            break
        if ips < best_ips * 1.05:
            break
        best, best_ips = b, ips
    session.transfer_s = session.inference_s = 0.0
    return best
