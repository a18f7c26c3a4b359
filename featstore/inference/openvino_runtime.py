"""OpenVINO, a CPU runtime: the same ONNX files; bf16 where the CPU computes it natively, and int8
with its own features.

OpenVINO is imported with `openvino_telemetry` hidden, so its conversion tools send nothing and
write nothing to the user's home.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from featstore.deps import available, require
from featstore.errors import DeviceError
from featstore.inference.runtimes import Runtime, register_runtime

#: OpenVINO's name of each inference precision featstore asks for.
INFERENCE_PRECISIONS = {"f32": "f32", "bf16": "bf16"}
_TELEMETRY = "openvino_telemetry"


def installed() -> bool:
    """True when OpenVINO can be imported here (asked without importing it)."""
    return available("openvino")


def _mute_telemetry() -> None:
    """Switch off the telemetry object an earlier `import openvino` made (consent False)."""
    tm = sys.modules.get(_TELEMETRY)
    telemetry = getattr(tm, "Telemetry", None)
    instance = getattr(telemetry, "_SingletonMetaClass__single_instance", None)
    if instance is not None:
        instance.consent = False


def openvino():
    """Import OpenVINO with its telemetry off; MissingDependencyError (with the pip line) without it."""
    if "openvino" in sys.modules and sys.modules["openvino"] is not None:
        _mute_telemetry()
        return sys.modules["openvino"]
    hide = _TELEMETRY not in sys.modules
    if hide:
        sys.modules[_TELEMETRY] = None  # the conversion tools fall back to their no-op stub
    try:
        return require("openvino", extra="openvino")
    finally:
        if hide and sys.modules.get(_TELEMETRY, 0) is None:
            del sys.modules[_TELEMETRY]


@lru_cache(maxsize=1)
def _core():
    return openvino().Core()


@lru_cache(maxsize=1)
def cpu_capabilities() -> tuple[str, ...]:
    """What OpenVINO's CPU plugin computes natively here (`OPTIMIZATION_CAPABILITIES`: FP32,
    BF16 on CPUs with AMX or AVX-512 BF16, INT8, ...); () when OpenVINO is not installed."""
    if not installed():
        return ()
    try:
        return tuple(str(c) for c in _core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    except Exception:  # noqa: BLE001 - a plugin that cannot answer offers nothing
        return ()


#: CPU flags (Linux /proc/cpuinfo) without one of which OpenVINO offers no bfloat16.
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "avx_ne_convert"})


@lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str] | None:
    """The CPU's flags from /proc/cpuinfo; None where there is none to read (not Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        return None
    return None


def has_bf16() -> bool:
    """True when this CPU computes bfloat16 natively (AMX or AVX-512 BF16), as OpenVINO says;
    a Linux CPU without any of `BF16_FLAGS` answers False without importing OpenVINO."""
    flags = _cpu_flags()
    if flags is not None and not flags & BF16_FLAGS:
        return False
    return "BF16" in cpu_capabilities()


def openvino_version() -> str:
    """The installed OpenVINO's version ("absent" without it)."""
    import importlib.metadata as md

    try:
        return md.version("openvino")
    except md.PackageNotFoundError:
        return "absent"


@dataclass
class OpenVinoSession:
    """A compiled OpenVINO model on the CPU: uint8 pixels in, float32 features out.

    `inference_precision` is "f32" or "bf16" (weights and activations rounded to bfloat16,
    float32 accumulation); an int8 QDQ model runs int8 either way. `compile_s` is the seconds
    `compile_model` took.
    """

    compiled: object
    request: object
    n_threads: int
    precision: str = "fp32"
    inference_precision: str = "f32"
    compile_s: float = 0.0
    device: str = "cpu"
    transfer_s: float = 0.0
    inference_s: float = 0.0
    providers: list[str] = field(default_factory=list)

    on_gpu = False

    @property
    def runtime(self) -> str:
        """The runtime computing the features."""
        return "openvino"

    def run(self, pixels: np.ndarray) -> np.ndarray:
        """Run a batch: (N, H, W, 3) uint8 -> (N, n_features) float32."""
        t0 = time.perf_counter()
        out = self.request.infer({0: np.ascontiguousarray(pixels, dtype=np.uint8)})[0]
        self.inference_s += time.perf_counter() - t0
        out = np.array(out, dtype=np.float32)  # a copy: the request reuses its output buffer
        return out.reshape(out.shape[0], -1)


def compile_config(n_threads: int, inference_precision: str) -> dict:
    """The CPU plugin's settings: one stream of `n_threads` threads (one batch at a time, as
    ONNX Runtime runs), threads not pinned to cores (the decode threads share them), and the
    inference precision spelled out (OpenVINO's default is bf16 wherever the CPU has it)."""
    return {
        "INFERENCE_PRECISION_HINT": INFERENCE_PRECISIONS[inference_precision],
        "INFERENCE_NUM_THREADS": int(n_threads),
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1,
        "ENABLE_CPU_PINNING": False,
    }


def open_openvino(
    model: str | os.PathLike | bytes,
    n_threads: int,
    inference_precision: str = "f32",
    precision: str = "fp32",
    cache_dir: Path | None = None,
) -> OpenVinoSession:
    """Compile an ONNX model (file or bytes) for OpenVINO's CPU plugin, with its compiled-model
    cache in `cache_dir` when given. MissingDependencyError without OpenVINO; DeviceError for
    bf16 on a CPU without native bfloat16, or a model OpenVINO cannot compile."""
    ov = openvino()
    if inference_precision == "bf16" and not has_bf16():
        raise DeviceError(bf16_missing_message())
    core = _core()
    t0 = time.perf_counter()
    try:
        if cache_dir is not None:
            cache_dir.mkdir(parents=True, exist_ok=True)
            core.set_property({"CACHE_DIR": str(cache_dir)})
        src = model if isinstance(model, bytes) else str(model)
        compiled = core.compile_model(
            core.read_model(src), "CPU", compile_config(n_threads, inference_precision)
        )
    except Exception as err:  # noqa: BLE001 - OpenVINO raises RuntimeError and its own types
        raise DeviceError(
            f"OpenVINO could not compile the model for the CPU: {str(err).strip()[:300]}"
        ) from err
    finally:
        if cache_dir is not None:
            core.set_property({"CACHE_DIR": ""})
    inp = compiled.inputs[0]
    if inp.get_element_type() != ov.Type.u8:
        raise DeviceError(
            f"the model's input {inp.any_name} has type {inp.get_element_type()}; expected uint8"
        )
    return OpenVinoSession(
        compiled,
        compiled.create_infer_request(),
        int(n_threads),
        precision,
        inference_precision,
        time.perf_counter() - t0,
        providers=[f"OpenVINO CPU ({inference_precision})"],
    )


def bf16_missing_message() -> str:
    """The one-line error when bf16 is asked for on a CPU without native bfloat16."""
    caps = ", ".join(cpu_capabilities()) or "nothing"
    return (
        "--precision bf16 needs a CPU with AMX or AVX-512 BF16 (OpenVINO reports this one computes "
        f"{caps} natively); use --precision int8 (faster) or fp32 here"
    )


#: How OpenVINO runs bf16 (the fp32 file in bfloat16) and an int8 file: part of their variants' digests.
BF16_SETTINGS = {"runtime": "openvino", "inference_precision": "bf16"}
INT8_SETTINGS = {"runtime": "openvino", "inference_precision": "f32"}


def _open(model, device: str, n_threads: int, *, precision="fp32", settings=None, **_):
    inference = (settings or {}).get("inference_precision", "bf16" if precision == "bf16" else "f32")
    return open_openvino(model, n_threads, inference, precision)


def _machine(precision: str) -> None:
    if precision == "bf16" and not has_bf16():
        raise DeviceError(bf16_missing_message())


register_runtime(
    Runtime(
        "openvino",
        "OpenVINO",
        {"cpu": ("fp32", "int8", "bf16")},
        _open,
        installed=installed,
        install='pip install "featstore[openvino]"',
        # on a CPU with native bfloat16 its bf16 and int8 kernels are what the machine is built
        # for, and its fp32 runs at least as fast as ONNX Runtime's (docs/performance.md)
        auto=lambda device: device == "cpu" and installed() and has_bf16(),
        machine=_machine,
        derived={"bf16": BF16_SETTINGS, "int8": INT8_SETTINGS},
        tokens={"bf16": "bf16", "int8": "int8_openvino"},
    )
)
