"""Numeric precision of a backbone run (fp32, int8, fp16 or bf16) and the model variant it runs.

Owns `PrecisionOptions`, which precision may run on which device, the feature-set label of
each precision, the warnings of a check, and `prepare_model`: the variant (`variants`) a run
executes, made once and cached in `store/backbones/`. The model transformations live in
`quantize`, the samples and the check in `calibration`. Imports `errors`, `options`,
`store.layout`, `data.decode` and `inference.variants`; `quantize`, `calibration` and
`openvino_runtime` inside the functions that use them. Never imports TensorFlow.

fp32 runs the export under either runtime. int8 runs a QDQ file quantized once (calibrated on
the user's images) under ONNX Runtime, or the same file under OpenVINO, whose features differ
measurably (its own digest). fp16 runs an fp16 copy on a GPU. bf16 runs the fp32 export under
OpenVINO with bfloat16 inference on a CPU that has it natively. Features of different digests
therefore never mix, and a head refuses features of another precision as it refuses another
backbone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from featstore.data.decode import DecodeOptions, resolve_decoder
from featstore.errors import DeviceError, InvalidOptionError, StoreError
from featstore.inference.variants import (
    ModelVariant,
    derived_digest,
    find_variant,
    fp32_variant,
    latest_variant,
    variant_digest,
    write_derived,
    write_variant,
)
from featstore.options import Options, check_choice
from featstore.store.layout import StoreLayout

__all__ = [
    "PRECISIONS",
    "ModelVariant",
    "PrecisionOptions",
    "check_precision",
    "find_variant",
    "precision_label",
    "prepare_model",
]

PRECISIONS = ("fp32", "int8", "fp16", "bf16")
#: A warning is given when features lose more accuracy than this (percentage points).
MAX_ACCURACY_LOSS_POINTS = 0.5
#: The check's timing against fp32 counts from this many images on.
MIN_TIMED_IMAGES = 64
#: How OpenVINO runs the bf16 variant (the fp32 export), and the int8 file; part of their keys.
BF16_SETTINGS = {"runtime": "openvino", "inference_precision": "bf16"}
OPENVINO_INT8_SETTINGS = {"runtime": "openvino", "inference_precision": "f32"}


def check_precision(precision: str, device: str) -> str:
    """Return `precision` if it can run on the resolved `device` (cpu|cuda|tensorrt).

    fp16 needs a GPU: ONNX Runtime's CPU provider has almost no fp16 kernels and runs such a
    model slower than fp32 (see README, "Precision and speed"). bf16 runs on the CPU (OpenVINO;
    whether this CPU has bfloat16 is `inference.sessions.resolve_runtime`'s question).

    Raises
    ------
    InvalidOptionError
        An unknown precision.
    DeviceError
        fp16 where no GPU is used; bf16 on a GPU.
    """
    _check_name(precision)
    if precision == "fp16" and device == "cpu":
        raise DeviceError(
            "--precision fp16 runs on a GPU (--device cuda or tensorrt), and no GPU is used here; "
            "on the CPU use --precision int8 (faster), bf16 (with OpenVINO) or fp32"
        )
    if precision == "bf16" and device != "cpu":
        raise DeviceError(
            f"--precision bf16 runs on the CPU (OpenVINO), not --device {device}; use --precision fp16 on a GPU"
        )
    return precision


def _check_name(precision: str) -> str:
    return check_choice("precision", precision, PRECISIONS)


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
        _check_name(self.precision)
        if self.n_calibration is not None and self.n_calibration < 1:
            raise InvalidOptionError("n_calibration", f"must be at least 1, not {self.n_calibration}")
        if self.n_check is not None and self.n_check < 0:
            raise InvalidOptionError("n_check", f"must be at least 0, not {self.n_check}")
        return self


def ensure_fp16(exported, layout: StoreLayout, log: Callable[[str], None]) -> ModelVariant:
    """Return the fp16 variant of `exported`, converting it once (uint8 in, float32 out kept)."""
    from featstore.inference.quantize import FP16_SETTINGS, convert_fp16

    digest = variant_digest(exported.digest, "fp16", FP16_SETTINGS, None)
    found = find_variant(layout, digest)
    if found is not None:
        return found
    log(f"converting {exported.recipe.label} to fp16 (once; cached in {layout.backbones})")
    v = ModelVariant(exported.path, "fp16", digest, exported.digest, "", dict(FP16_SETTINGS))
    return write_variant(layout, exported.recipe.file_stem, v, lambda tmp: convert_fp16(exported.path, tmp))


def ensure_int8(
    exported, layout: StoreLayout, checker, recalibrate: bool, log: Callable[[str], None]
) -> ModelVariant:
    """Return an int8 variant of `exported`: the latest one in the store unless `recalibrate`,
    else one calibrated on `checker.calibration_sample()` (a `calibration.Checker`) and checked
    against fp32 under ONNX Runtime (its speed under OpenVINO too, where installed).

    Reusing the store's int8 model keeps the features of every dataset extracted at int8
    comparable, so a head trained on one can score another.

    Raises
    ------
    StoreError
        No int8 model exists and no images were given to calibrate one.
    ExportError
        Quantization failed.
    """
    from featstore.inference.openvino_runtime import installed
    from featstore.inference.quantize import INT8_SETTINGS, quantize_int8

    stem = exported.recipe.file_stem
    if not recalibrate:
        found = latest_variant(layout, stem, "int8")
        if found is not None:
            cal = found.calibration or {}
            log(
                f"using the int8 model of {exported.recipe.label} calibrated on {cal.get('dataset')} "
                f"({cal.get('n_images')} images); --recalibrate makes a new one from this data"
            )
            return found
    if checker is None:
        raise StoreError(
            f"no int8 model of {exported.recipe.label} in {layout.backbones}; "
            "run extract --precision int8 on your images first, which calibrates one"
        )
    s = checker.calibration_sample()
    digest = variant_digest(exported.digest, "int8", INT8_SETTINGS, s.digest)
    found = find_variant(layout, digest)
    if found is not None:
        return found
    log(f"quantizing {exported.recipe.label} to int8, calibrated on {len(s.pixels)} of your images (once)")
    v = ModelVariant(exported.path, "int8", digest, exported.digest, "", dict(INT8_SETTINGS), s.describe())
    also = ("openvino",) if installed() else ()

    def make(tmp):
        quantize_int8(exported.path, s.pixels, tmp)
        return {"check": checker.check(tmp, "int8", "onnxruntime", also)}

    return write_variant(layout, stem, v, make)


def ensure_openvino_int8(int8: ModelVariant, exported, layout: StoreLayout, checker, log) -> ModelVariant:
    """Return the variant running the int8 file `int8` under OpenVINO (its own digest: its
    features differ from ONNX Runtime's), recorded once with its check against fp32."""
    digest = derived_digest(int8.digest, "int8", OPENVINO_INT8_SETTINGS)
    found = find_variant(layout, digest)
    if found is not None:
        return found
    log(f"running the int8 model of {exported.recipe.label} under OpenVINO (recorded once, with its check)")
    v = ModelVariant(
        int8.path,
        "int8",
        digest,
        int8.base_digest,
        int8.onnx_sha256,
        dict(OPENVINO_INT8_SETTINGS),
        int8.calibration,
        runtime="openvino",
    )
    return write_derived(
        layout,
        exported.recipe.file_stem,
        v,
        lambda: checker.check(int8.path, "int8", "openvino", ("onnxruntime",)) if checker else None,
    )


def ensure_bf16(exported, layout: StoreLayout, checker, log: Callable[[str], None]) -> ModelVariant:
    """Return the bf16 variant of `exported` (the fp32 file, OpenVINO bfloat16 inference),
    recorded once with its check against fp32 (speeds of OpenVINO f32 and ONNX Runtime fp32)."""
    digest = derived_digest(exported.digest, "bf16", BF16_SETTINGS)
    found = find_variant(layout, digest)
    if found is not None:
        return found
    log(f"running {exported.recipe.label} in bf16 under OpenVINO (recorded once, with its check)")
    v = ModelVariant(
        exported.path,
        "bf16",
        digest,
        exported.digest,
        exported.onnx_sha256,
        dict(BF16_SETTINGS),
        runtime="openvino",
    )
    return write_derived(
        layout,
        exported.recipe.file_stem,
        v,
        lambda: checker.check(exported.path, "bf16", "openvino", ("onnxruntime",)) if checker else None,
    )


def precision_label(label: str, precision: str) -> str:
    """The backbone label of a feature set at `precision`: `vgg16`, `vgg16-int8`, `vgg16-bf16`."""
    return label if precision == "fp32" else f"{label}-{precision}"


def speed_warning(variant: ModelVariant) -> str | None:
    """A one-line warning when the variant ran over 10 % slower than fp32 in its check (timed on
    at least `MIN_TIMED_IMAGES` images, else the timing is too short to say)."""
    c, p = variant.check or {}, variant.precision
    f, q = c.get("fp32_images_per_s"), c.get(f"{p}_images_per_s")
    if not f or not q or q >= 0.9 * f or c.get("n_images", 0) < MIN_TIMED_IMAGES:
        return None
    why = {
        "int8": "operations int8 does not cover run in float between conversions",
        "bf16": "this CPU's bfloat16 units do not speed this network up",
    }.get(p, "")
    runtime = f" ({c['runtime']})" if c.get("runtime") else ""
    return (
        f"the {p} model{runtime} ran at {q:.1f} images/s against {f:.1f} for fp32 in its check: {p} does not "
        f"pay off for this backbone on this CPU ({why}); use --precision fp32"
    )


def runtime_warning(variant: ModelVariant) -> str | None:
    """A one-line warning when the other runtime ran the same model over 10 % faster in the
    check (int8: both runtimes run the QDQ file; timed on at least `MIN_TIMED_IMAGES` images)."""
    c, p = variant.check or {}, variant.precision
    mine, speeds = c.get(f"{p}_images_per_s"), c.get("speeds") or {}
    other = next(
        (k.split()[0] for k in speeds if k.endswith(f" {p}") and k.split()[0] != c.get("runtime")), None
    )
    theirs = speeds.get(f"{other} {p}") if other else None
    if not mine or not theirs or theirs <= 1.1 * mine or c.get("n_images", 0) < MIN_TIMED_IMAGES:
        return None
    return (
        f"{other} ran this {p} model at {theirs:.1f} images/s against {mine:.1f} for {c['runtime']} in its "
        f"check; --runtime {other} is faster for this backbone here (its {p} features are a set of their own)"
    )


def accuracy_warning(variant: ModelVariant) -> str | None:
    """A one-line warning when the check lost more than `MAX_ACCURACY_LOSS_POINTS`."""
    c, p = variant.check or {}, variant.precision
    loss = c.get("accuracy_loss_points")
    if loss is None or loss <= MAX_ACCURACY_LOSS_POINTS:
        return None
    held = "held-out " if c.get("held_out") else ""
    return (
        f"{p} features lose {loss:.1f} accuracy points against fp32 (logistic head, {c.get('n_images')} "
        f"{held}images: {100 * c['fp32_accuracy']:.1f} % -> {100 * c[f'{p}_accuracy']:.1f} %), more "
        f"than {MAX_ACCURACY_LOSS_POINTS} points; use --precision fp32 where accuracy matters"
    )


def _usable(found: ModelVariant | None, exported, precision: str, runtime: str, keep_runtime: bool) -> bool:
    """True when a stored variant can go on computing a set's features in this run."""
    return (
        found is not None
        and found.base_digest == exported.digest
        and found.precision == precision
        and (keep_runtime or found.runtime == runtime)
    )


def prepare_model(
    exported,
    precision: PrecisionOptions | str,
    layout: StoreLayout,
    *,
    runtime: str = "onnxruntime",
    keep_runtime: bool = False,
    dataset=None,
    decode: DecodeOptions | None = None,
    n_threads: int | None = None,
    log: Callable[[str], None] | None = None,
    prefer: str | None = None,
) -> ModelVariant:
    """Return the model `exported` runs as at `precision` under `runtime`, made and cached once.

    fp32 is the export itself (either runtime); fp16 is converted once; bf16 is the export run
    by OpenVINO in bfloat16; int8 reuses, unless `recalibrate`, the variant whose digest is
    `prefer` (the model an existing feature set was made with) when it is still stored, else
    the store's latest int8 model of this export, else calibrates one on `n_calibration`
    images of `dataset` (a `data.scan.Dataset`) spread over it; under OpenVINO that file runs
    as its own variant. A new int8, bf16 or OpenVINO int8 variant is checked against fp32 on
    `n_check` other images (cosine similarity, cross-validated logistic accuracy, speeds; 0
    skips the check).

    Parameters
    ----------
    exported
        The fp32 `backbones.export.ExportedBackbone`.
    precision
        `PrecisionOptions`, or just the precision's name (fp32, int8, fp16, bf16).
    layout
        The store whose `backbones/` folder keeps the variants.
    runtime, keep_runtime
        The resolved runtime (onnxruntime or openvino; `inference.sessions.resolve_runtime`);
        with `keep_runtime` (the runtime was auto), the `prefer` variant is used whichever
        runtime it runs under, so a set goes on with the model it was made with.
    dataset, decode
        The images that calibrate and check a new variant, decoded as `decode` says (default:
        squash, the pillow decoder) and as `extract` decodes them.
    n_threads, log, prefer
        Inference threads of the check; a callback for notes; the digest to reuse first.

    Returns
    -------
    ModelVariant
        The model file, how it runs, its digest (what feature sets record), and for a new
        variant its accuracy check (for int8 its calibration).

    Raises
    ------
    InvalidOptionError
        A bad precision or sample size.
    StoreError, ExportError
        No int8 model and no dataset to calibrate one; quantization or conversion failed.
    """
    opts = (PrecisionOptions(precision) if isinstance(precision, str) else precision).check()
    log = log or (lambda msg: None)
    p = opts.precision
    if p == "fp32":
        return fp32_variant(exported)
    if p == "fp16":
        return ensure_fp16(exported, layout, log)
    if prefer and not opts.recalibrate:
        found = find_variant(layout, prefer)
        if _usable(found, exported, p, runtime, keep_runtime):
            return found
    checker = None
    if dataset is not None:
        checker = _checker(exported, dataset, opts, decode or DecodeOptions(decoder="pillow"), n_threads, log)
    if p == "bf16":
        return ensure_bf16(exported, layout, checker, log)
    int8 = ensure_int8(exported, layout, checker, opts.recalibrate, log)
    if runtime == "openvino":
        return ensure_openvino_int8(int8, exported, layout, checker, log)
    return int8


def _checker(exported, dataset, opts: PrecisionOptions, decode: DecodeOptions, n_threads, log):
    """The `calibration.Checker` of `dataset` for `exported`, decoded as `decode` says."""
    from featstore.inference import calibration as cal

    spec = {
        "name": dataset.name,
        "items": dataset.items,
        "size_px": exported.recipe.input_size,
        "resize": decode.resize,
        "decoder": resolve_decoder(decode.decoder),
        # bf16 calibrates nothing: every image may serve the check, each one held out
        "n_calibration": 0
        if opts.precision == "bf16"
        else (cal.N_CALIBRATION if opts.n_calibration is None else opts.n_calibration),
        "n_check": cal.N_CHECK if opts.n_check is None else opts.n_check,
        "fp32_path": exported.path,
        "n_threads": n_threads,
    }
    return cal.Checker(spec, log)
