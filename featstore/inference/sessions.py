"""Which runtime runs a backbone, and opening it: ONNX Runtime or OpenVINO behind one interface.

Owns `resolve_runtime` (what `--runtime auto|onnxruntime|openvino` means on this machine, for a
device and a precision, with the one-line errors of the combinations that cannot run) and
`open_model`, which opens a model file as a session of the runtime a run resolved: ONNX
Runtime's `runtime.BackboneSession` or OpenVINO's `openvino_runtime.OpenVinoSession` (both:
`run(uint8 pixels) -> float32 features`, `device`, `runtime`, `inference_s`). Imports
`runtime`, `errors`, `options` and `inference.openvino_runtime` (which imports OpenVINO only
when asked).

`auto` is OpenVINO on the CPU where OpenVINO is installed and its CPU plugin reports native
bfloat16 (AMX, or AVX-512 BF16): there its bf16 and int8 kernels are what the machine is built
for, and its fp32 runs at least as fast as ONNX Runtime's (README, "Precision and speed").
Everywhere else, and on every GPU, `auto` is ONNX Runtime.
"""

from __future__ import annotations

import os
from pathlib import Path

from featstore.errors import DeviceError, InvalidOptionError, MissingDependencyError
from featstore.inference import openvino_runtime as ovr
from featstore.options import check_choice
from featstore.runtime import RUNTIMES, check_device, default_threads, open_session

#: The precisions each runtime runs (fp16 is a GPU precision: ONNX Runtime's CUDA or TensorRT).
RUNTIME_PRECISIONS = {"onnxruntime": ("fp32", "int8", "fp16"), "openvino": ("fp32", "int8", "bf16")}
INSTALL_OPENVINO = 'pip install "featstore[openvino]"'


def auto_runtime(device: str) -> str:
    """What `auto` means for a resolved `device` here: openvino on a CPU with native bfloat16
    where OpenVINO is installed, onnxruntime otherwise."""
    if device == "cpu" and ovr.installed() and ovr.has_bf16():
        return "openvino"
    return "onnxruntime"


def _missing_openvino(what: str) -> MissingDependencyError:
    return MissingDependencyError(f"{what} needs OpenVINO, which is not installed; run: {INSTALL_OPENVINO}")


def device_for(device: str, runtime: str, precision: str = "fp32") -> str:
    """The device a run uses: `device` resolved and checked (`runtime.check_device`), except
    that `auto` is the CPU when OpenVINO is asked for, or bf16, which only OpenVINO runs.

    Raises
    ------
    InvalidOptionError, DeviceError
        As `runtime.check_device`.
    """
    if device == "auto" and (runtime == "openvino" or precision == "bf16"):
        return "cpu"
    return check_device(device)


def resolve_runtime(runtime: str, device: str, precision: str = "fp32") -> str:
    """Return the runtime ("onnxruntime" or "openvino") that runs `precision` on the resolved
    `device` (cpu, cuda, tensorrt) when `runtime` (auto, onnxruntime, openvino) is asked for.

    bf16 always runs under OpenVINO, on a CPU with native bfloat16; fp16 under ONNX Runtime on
    a GPU (`precision.check_precision` has that error).

    Raises
    ------
    InvalidOptionError
        An unknown runtime, or a precision the runtime asked for does not run.
    DeviceError
        OpenVINO (or bf16) asked for on a GPU; bf16 on a CPU without native bfloat16.
    MissingDependencyError
        OpenVINO asked for (or needed by bf16) and not installed.
    """
    check_choice("runtime", runtime, RUNTIMES)
    if precision == "bf16":
        if runtime == "onnxruntime":
            raise InvalidOptionError(
                "runtime", "onnxruntime has no bf16 kernels on the CPU; bf16 runs under openvino (or auto)"
            )
        runtime = "openvino"
    if runtime == "auto":
        return auto_runtime(device)
    if runtime == "openvino":
        if device != "cpu":
            raise DeviceError(
                f"--runtime openvino runs on the CPU, and --device {device} was asked for; "
                f"use --device cpu, or --runtime onnxruntime (or auto) on the GPU"
                if precision != "bf16"
                else f"--precision bf16 runs on the CPU (OpenVINO), not --device {device}; use fp16 on a GPU"
            )
        if not ovr.installed():
            raise _missing_openvino("--precision bf16" if precision == "bf16" else "--runtime openvino")
        if precision == "bf16" and not ovr.has_bf16():
            raise DeviceError(ovr.bf16_missing_message())
    if precision not in RUNTIME_PRECISIONS[runtime]:
        raise InvalidOptionError(
            "runtime", f"{runtime} does not run --precision {precision} here; use --runtime onnxruntime"
        )
    return runtime


def open_model(
    model: str | os.PathLike | bytes,
    runtime: str,
    device: str = "cpu",
    n_threads: int | None = None,
    *,
    precision: str = "fp32",
    inference_precision: str = "f32",
    trt_cache_dir: Path | None = None,
    trt_prefix: str | None = None,
):
    """Open `model` (an ONNX file or its bytes) under the resolved `runtime`.

    ONNX Runtime runs it on `device` (TensorRT engines cached in `trt_cache_dir` as
    `trt_prefix`); OpenVINO on the CPU, its float operations in `inference_precision` (f32 or
    bf16). Returns a session: `run((N, S, S, 3) uint8) -> (N, n_features) float32`.

    Raises
    ------
    DeviceError, MissingDependencyError
        As `runtime.open_session` and `openvino_runtime.open_openvino`.
    """
    if runtime == "openvino":
        return ovr.open_openvino(model, n_threads or default_threads(), inference_precision, precision)
    return open_session(model, device, n_threads, trt_cache_dir, precision, trt_prefix)


def variant_runtime(variant, resolved: str) -> str:
    """The runtime that runs model variant `variant` (`inference.variants.ModelVariant`) in a
    run whose runtime resolved to `resolved`: the variant's own (int8 files under ONNX Runtime,
    bf16 and int8 under OpenVINO), or `resolved` for fp32, which either runs."""
    return resolved if variant.runtime == "any" else variant.runtime
