"""The runtime registry (ONNX Runtime, OpenVINO: one module each that registers itself) and
`Target`, the device and runtime of one run, resolved once. Nothing outside a runtime's module
branches on its name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from featstore.errors import DeviceError, InvalidOptionError, MissingDependencyError
from featstore.inference.devices import gpu_count
from featstore.options import check_choice
from featstore.registry import Registry


def _never(_device: str) -> bool:
    return False


def _always() -> bool:
    return True


@dataclass(frozen=True)
class Runtime:
    """One runtime.

    - `name`, `title`: `--runtime NAME`, and the name users know it by.
    - `precisions`: device -> the precisions it runs there, e.g. `{"cpu": ("fp32", "int8")}`.
    - `open(model, device, n_threads, *, precision, settings, trt_cache_dir, trt_prefix)`: a
      session of a model file or its bytes: `run((N, S, S, 3) uint8) -> (N, D) float32`, with
      `device`, `runtime`, `providers`, `inference_s`, `transfer_s`.
    - `installed`, `install`: importable here (asked without importing), else the pip line.
    - `auto(device)`: `--runtime auto` picks it on that device before the others.
    - `ready(device)`, `machine(precision)`: raise DeviceError when a GPU cannot be used here, or
      this processor cannot run the precision.
    - `derived`, `tokens`: precision -> the settings of its own variants of a model file (their
      features differ from the reference runtime's), and their records' file-name token.
    - `reference`: its features are the ones a model file's digest names (ONNX Runtime).
    """

    name: str
    title: str
    precisions: dict[str, tuple[str, ...]]
    open: Callable[..., Any]
    installed: Callable[[], bool] = _always
    install: str = ""
    auto: Callable[[str], bool] = _never
    ready: Callable[[str], None] | None = None
    machine: Callable[[str], None] | None = None
    derived: dict[str, dict] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    reference: bool = False

    @property
    def devices(self) -> tuple[str, ...]:
        """The devices it runs on."""
        return tuple(self.precisions)

    def runs(self, precision: str, device: str) -> bool:
        """Whether it runs `precision` on `device`."""
        return precision in self.precisions.get(device, ())


#: The modules of the built-in runtimes, in listing order (the first is the default).
RUNTIMES: Registry[Runtime] = Registry(
    ("featstore.inference.onnxruntime_runtime", "featstore.inference.openvino_runtime")
)


def register_runtime(runtime: Runtime) -> Runtime:
    """Add `runtime` to the registry (replacing one of the same name) and return it."""
    return RUNTIMES.add(runtime.name, runtime, runtime.open.__module__)


def available_runtimes() -> list[str]:
    """The registered runtimes' names, in listing order."""
    return RUNTIMES.names()


def get_runtime(name: str) -> Runtime:
    """Return the registered runtime `name`; InvalidOptionError when there is none."""
    check_choice("runtime", name, ("auto", *RUNTIMES.names()))
    return RUNTIMES.get(name)


def reference_runtime() -> Runtime:
    """The runtime whose features of a model file its digest names (ONNX Runtime)."""
    return next(r for r in RUNTIMES.values() if r.reference)


def _where(devices) -> str:
    gpus = [d for d in devices if d != "cpu"]
    if not gpus:
        return "the CPU"
    return f"a GPU (--device {' or '.join(gpus)})" if "cpu" not in devices else ", ".join(devices)


def _precision_device(precision: str, device: str, runtimes: list[Runtime]) -> None:
    """Raise DeviceError when no runtime runs `precision` on `device`."""
    if any(r.runs(precision, device) for r in runtimes):
        return
    places = [d for r in runtimes for d in r.devices if r.runs(precision, d)]
    here = sorted({p for r in runtimes for p in r.precisions.get(device, ())}, key=_order)
    who = ", ".join(r.title for r in runtimes if any(r.runs(precision, d) for d in places))
    if device == "cpu":
        raise DeviceError(
            f"--precision {precision} runs on {_where(dict.fromkeys(places))}, and no GPU is used here; "
            f"on the CPU use --precision {_choices(here)}"
        )
    raise DeviceError(
        f"--precision {precision} runs on {_where(dict.fromkeys(places))} ({who}), not --device {device}; "
        f"there use --precision {_choices(here)}"
    )


def _order(precision: str) -> int:
    return (
        ("int8", "bf16", "fp16", "fp32").index(precision)
        if precision in ("int8", "bf16", "fp16", "fp32")
        else 9
    )


def _choices(precisions: list[str]) -> str:
    return precisions[0] if len(precisions) == 1 else f"{', '.join(precisions[:-1])} or {precisions[-1]}"


def resolve_device(device: str, runtime: str, precision: str = "fp32") -> str:
    """The device a run computes on: `auto` is a GPU where one is visible and a runtime can run
    the precision there, else the CPU; a GPU asked for is checked usable (DeviceError).
    InvalidOptionError for an unknown device or runtime."""
    check_choice("device", device, ("auto", "cpu", "cuda", "tensorrt"))
    pool = _pool(runtime)
    if device == "auto":
        if gpu_count() > 0 and any(r.runs(precision, "cuda") and r.installed() for r in pool):
            try:
                _ready(pool, "cuda")
                return "cuda"
            except DeviceError:
                pass
        return "cpu"
    if device != "cpu":
        _ready([r for r in pool if device in r.devices] or pool, device)
    return device


def _pool(runtime: str) -> list[Runtime]:
    return RUNTIMES.values() if runtime == "auto" else [get_runtime(runtime)]


def _ready(pool: list[Runtime], device: str) -> None:
    """Raise the first runtime's DeviceError when no runtime of `pool` can use `device`."""
    first = None
    for r in pool:
        try:
            if r.ready is not None:
                r.ready(device)
            return
        except DeviceError as err:
            first = first or err
    if first is not None:
        raise first


def resolve_runtime(device: str, runtime: str, precision: str = "fp32") -> Runtime:
    """The runtime that runs `precision` on the resolved `device`: `auto` is the first that prefers
    the device, else the first registered that runs the precision there. InvalidOptionError when
    the runtime asked for does not run the precision; DeviceError for a device or precision it
    cannot run here; MissingDependencyError when it (or the only one that can) is not installed."""
    asked = None if runtime == "auto" else get_runtime(runtime)
    if asked is not None and device not in asked.devices:
        raise DeviceError(
            f"--runtime {asked.name} runs on {_where(asked.devices)}, and --device {device} was asked for; "
            f"use --device {asked.devices[0]}, or another runtime (or auto) on {device}"
        )
    _precision_device(precision, device, RUNTIMES.values())
    if asked is not None and not asked.runs(precision, device):
        others = [r.name for r in RUNTIMES.values() if r.runs(precision, device)]
        on = "the CPU" if device == "cpu" else device
        raise InvalidOptionError(
            "runtime",
            f"{asked.name} has no {precision} kernels on {on}; {precision} runs under {' or '.join(others)} (or auto)",
        )
    chosen = asked or _auto(device, precision)
    if not chosen.installed():
        what = f"--runtime {chosen.name}" if asked else f"--precision {precision}"
        raise MissingDependencyError(
            f"{what} needs {chosen.title}, which is not installed; run: {chosen.install}"
        )
    if chosen.machine is not None:
        chosen.machine(precision)
    return chosen


def resolve(device: str, runtime: str, precision: str = "fp32") -> tuple[str, Runtime]:
    """`resolve_device` and `resolve_runtime` together: the (device, runtime) of a run."""
    resolved = resolve_device(device, runtime, precision)
    return resolved, resolve_runtime(resolved, runtime, precision)


def _auto(device: str, precision: str) -> Runtime:
    """What `--runtime auto` means for `precision` on `device`."""
    runs = [r for r in RUNTIMES.values() if r.runs(precision, device)]
    preferred = next((r for r in runs if r.installed() and r.auto(device)), None)
    return preferred or next((r for r in runs if r.installed()), runs[0])


class Target:
    """Where one run computes: the device and runtime asked for, resolved once on first use (a run
    with nothing to compute imports no runtime), and `n_threads` for its sessions. `check()`
    makes the checks that cost no import before any work."""

    def __init__(self, device: str = "auto", runtime: str = "auto", precision: str = "fp32", n_threads=None):
        self.asked_device, self.asked_runtime = device, runtime
        self.precision, self.n_threads = precision, n_threads

    def check(self) -> Target:
        """Raise for options that cannot run here whatever the images (see `resolve`); return self."""
        if self.asked_device != "auto":
            self.device  # noqa: B018 - resolves and checks
        if self.asked_runtime != "auto" or self.precision in ("fp16", "bf16"):
            self.runtime  # noqa: B018
        return self

    @cached_property
    def device(self) -> str:
        """The resolved device: cpu, cuda or tensorrt."""
        return resolve_device(self.asked_device, self.asked_runtime, self.precision)

    @cached_property
    def runtime(self) -> Runtime:
        """The resolved runtime."""
        return resolve_runtime(self.device, self.asked_runtime, self.precision)

    def runtime_of(self, variant) -> Runtime:
        """The runtime that runs model variant `variant`: its own, or this run's for fp32."""
        own = getattr(variant, "runtime", "any")
        return self.runtime if own == "any" else get_runtime(own)


def open_model(model, runtime: Runtime | str, device: str = "cpu", n_threads: int | None = None, **kw):
    """Open `model` (an ONNX file or its bytes) as a session of `runtime` on `device`; keywords
    as `Runtime.open` takes them (`precision`, `settings`, `trt_cache_dir`, `trt_prefix`)."""
    from featstore.inference.devices import default_threads

    rt = get_runtime(runtime) if isinstance(runtime, str) else runtime
    return rt.open(model, device, n_threads or default_threads(), **kw)
