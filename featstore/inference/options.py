"""The options of running a backbone (`InferenceOptions`) and of its precision
(`PrecisionOptions`); pure Python, read by the CLI at start-up."""

from __future__ import annotations

from dataclasses import dataclass

from featstore.errors import InvalidOptionError
from featstore.options import Options, check_choice

DEVICES = ("auto", "cpu", "cuda", "tensorrt")
ENGINES = ("local", "ray")
PRECISIONS = ("fp32", "int8", "fp16", "bf16")


@dataclass(frozen=True)
class InferenceOptions(Options):
    """Where and how a backbone runs: `device` (auto, cpu, cuda, tensorrt), images per batch
    (`batch_size`, a number, or auto: 32 on the CPU, probed on a CUDA GPU, 64 with TensorRT),
    inference threads (`n_threads`, default one per core), the engine (local, or ray with
    `ray_address`), and the `runtime` (auto, or a registered runtime: onnxruntime, openvino)."""

    device: str = "auto"
    batch_size: int | str = "auto"
    n_threads: int | None = None
    engine: str = "local"
    ray_address: str | None = None
    runtime: str = "auto"

    def check(self) -> InferenceOptions:
        """Raise InvalidOptionError for an unknown device, engine or runtime, a bad batch or
        thread count, or a Ray address without the ray engine."""
        from featstore.inference.runtimes import available_runtimes

        check_choice("device", self.device, DEVICES)
        check_choice("runtime", self.runtime, ("auto", *available_runtimes()))
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
        """True when the batch size is chosen per device."""
        return self.batch_size == "auto"

    def batch_or(self, default: int) -> int:
        """The batch size as a number, `default` when it is auto."""
        return default if self.batch_auto else int(self.batch_size)


@dataclass(frozen=True)
class PrecisionOptions(Options):
    """The precision features are computed at: fp32; int8 (calibrated on `n_calibration` images,
    default 200, checked against fp32 on `n_check`, default 300; `recalibrate` makes a new int8
    model instead of reusing the store's); fp16 (GPU only); bf16 (CPU with AMX or AVX-512 BF16,
    OpenVINO; checked against fp32 on `n_check` images)."""

    precision: str = "fp32"
    n_calibration: int | None = None
    n_check: int | None = None
    recalibrate: bool = False

    def check(self) -> PrecisionOptions:
        """Raise InvalidOptionError for an unknown precision or a bad sample size."""
        check_choice("precision", self.precision, PRECISIONS)
        if self.n_calibration is not None and self.n_calibration < 1:
            raise InvalidOptionError("n_calibration", f"must be at least 1, not {self.n_calibration}")
        if self.n_check is not None and self.n_check < 0:
            raise InvalidOptionError("n_check", f"must be at least 0, not {self.n_check}")
        return self
