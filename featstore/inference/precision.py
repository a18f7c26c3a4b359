"""The model variant a run executes at its precision, made once and kept in `store/backbones/`,
and the warnings of its check against fp32.

Each variant has its own digest, so a head refuses features of another precision as it
refuses another backbone.
"""

from __future__ import annotations

from featstore.data.decode import resolve_decoder
from featstore.data.options import DecodeOptions
from featstore.errors import StoreError
from featstore.inference.options import PrecisionOptions
from featstore.inference.runtimes import Runtime, Target, available_runtimes, get_runtime, reference_runtime
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
from featstore.reporter import SILENT, Reporter
from featstore.store.layout import StoreLayout

#: A warning is given when features lose more accuracy than this (percentage points).
MAX_ACCURACY_LOSS_POINTS = 0.5
#: The check's timing against fp32 counts from this many images on.
MIN_TIMED_IMAGES = 64


def precision_label(label: str, precision: str) -> str:
    """The backbone label of a feature set at `precision`: `vgg16`, `vgg16-int8`, `vgg16-bf16`."""
    return label if precision == "fp32" else f"{label}-{precision}"


def ensure_fp16(exported, layout: StoreLayout, reporter: Reporter) -> ModelVariant:
    """Return the fp16 variant of `exported`, converting it once (uint8 in, float32 out kept)."""
    from featstore.inference.quantize import FP16_SETTINGS, convert_fp16

    digest = variant_digest(exported.digest, "fp16", FP16_SETTINGS, None)
    found = find_variant(layout, digest)
    if found is not None:
        return found
    reporter.log(f"converting {exported.recipe.label} to fp16 (once; cached in {layout.backbones})")
    v = ModelVariant(exported.path, "fp16", digest, exported.digest, "", dict(FP16_SETTINGS))
    return write_variant(layout, exported.recipe.file_stem, v, lambda tmp: convert_fp16(exported.path, tmp))


def _others(runtime: Runtime, precision: str) -> list[Runtime]:
    """The other installed runtimes that run `precision` on the CPU (their speeds go in a check)."""
    out = [get_runtime(n) for n in available_runtimes() if n != runtime.name]
    return [r for r in out if r.runs(precision, "cpu") and r.installed()]


def ensure_int8(
    exported, layout: StoreLayout, checker, recalibrate: bool, reporter: Reporter
) -> ModelVariant:
    """Return an int8 variant of `exported`: the store's latest unless `recalibrate`, else one
    calibrated on the checker's sample and checked against fp32 (keeping one int8 model keeps
    every dataset's int8 features comparable). StoreError when none exists and no images
    were given; ExportError when quantization fails."""
    from featstore.inference.quantize import INT8_SETTINGS, quantize_int8

    stem = exported.recipe.file_stem
    if not recalibrate:
        found = latest_variant(layout, stem, "int8")
        if found is not None:
            cal = found.calibration or {}
            reporter.log(
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
    reporter.log(
        f"quantizing {exported.recipe.label} to int8, calibrated on {len(s.pixels)} of your images (once)"
    )
    ref = reference_runtime()
    v = ModelVariant(exported.path, "int8", digest, exported.digest, "", dict(INT8_SETTINGS), s.describe())

    def make(tmp):
        quantize_int8(exported.path, s.pixels, tmp)
        return {"check": checker.check(tmp, "int8", ref, None, _others(ref, "int8"))}

    return write_variant(layout, stem, v, make)


def ensure_derived(base: ModelVariant, runtime: Runtime, precision: str, exported, layout, checker, reporter):
    """Return the variant of `runtime` running `base`'s file at `precision` its own way
    (`runtime.derived[precision]`), recorded once with its check against fp32."""
    settings = runtime.derived[precision]
    digest = derived_digest(base.digest, precision, settings)
    found = find_variant(layout, digest)
    if found is not None:
        return found
    reporter.log(
        f"running {exported.recipe.label} in {precision} under {runtime.title} (recorded once, with its check)"
    )
    v = ModelVariant(
        base.path, precision, digest, exported.digest, base.onnx_sha256, dict(settings), base.calibration,
        runtime=runtime.name,
    )  # fmt: skip
    others = [r for r in _others(runtime, base.precision) if not r.derived.get(base.precision)]

    def check():
        return (
            checker.check(base.path, precision, runtime, settings, others, base.precision)
            if checker
            else None
        )

    return write_derived(layout, exported.recipe.file_stem, v, runtime.tokens[precision], check)


def speed_warning(variant: ModelVariant) -> str | None:
    """A warning when the variant ran over 10 % slower than fp32 in its check (timed on at least
    `MIN_TIMED_IMAGES` images)."""
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
    """A warning when another runtime ran the same model over 10 % faster in the check."""
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


def prepare_model(
    exported,
    precision: PrecisionOptions,
    layout: StoreLayout,
    target: Target,
    *,
    dataset=None,
    decode: DecodeOptions = DecodeOptions(decoder="pillow"),
    prefer: str | None = None,
    reporter: Reporter = SILENT,
) -> ModelVariant:
    """Return the model `exported` runs as at `precision` on `target`, made and cached once.

    fp32 and bf16 run the export; fp16 is converted once; int8 reuses (unless `recalibrate`)
    the variant of digest `prefer` (what an existing feature set was made with), else the
    store's latest int8 model, else calibrates one on `dataset`. A runtime that runs the
    precision its own way gets its own variant. A new variant is checked against fp32 on
    `precision.n_check` other images (0: no check).

    Parameters
    ----------
    exported
        The fp32 `ExportedBackbone`.
    precision
        The precision and its calibration sample sizes.
    layout, target
        The store keeping the variants; the run's device and runtime (resolved only when a
        variant has to be chosen).
    dataset, decode
        The images that calibrate and check a new variant, decoded as `extract` decodes them.
    prefer, reporter
        The digest to reuse first; where notes go.

    Raises
    ------
    StoreError, ExportError
        No int8 model and no dataset to calibrate one; quantization or conversion failed.
    """
    opts = precision.check()
    p = opts.precision
    if p == "fp32":
        return fp32_variant(exported)
    if p == "fp16":
        return ensure_fp16(exported, layout, reporter)
    if prefer and not opts.recalibrate:
        found = find_variant(layout, prefer)
        if _usable(found, exported, p, target):
            return found
    checker = None if dataset is None else _checker(exported, dataset, opts, decode, target, reporter)
    runtime = target.runtime
    base = (
        fp32_variant(exported)
        if p == "bf16"
        else ensure_int8(exported, layout, checker, opts.recalibrate, reporter)
    )
    if p not in runtime.derived:
        return base
    return ensure_derived(base, runtime, p, exported, layout, checker, reporter)


def _usable(found: ModelVariant | None, exported, precision: str, target: Target) -> bool:
    """True when a stored variant can go on computing a set's features in this run."""
    if found is None or found.base_digest != exported.digest or found.precision != precision:
        return False
    return target.asked_runtime == "auto" or found.runtime == target.runtime.name


def _checker(exported, dataset, opts: PrecisionOptions, decode: DecodeOptions, target: Target, reporter):
    """The `calibration.Checker` of `dataset` for `exported`, decoded as `decode` says."""
    from featstore.inference import calibration as cal

    spec = {
        "name": dataset.name,
        "items": dataset.items,
        "size_px": exported.recipe.size,
        "resize": decode.resize,
        "decoder": resolve_decoder(decode.decoder),
        # bf16 calibrates nothing: every image may serve the check, each one held out
        "n_calibration": 0
        if opts.precision == "bf16"
        else (cal.N_CALIBRATION if opts.n_calibration is None else opts.n_calibration),
        "n_check": cal.N_CHECK if opts.n_check is None else opts.n_check,
        "fp32_path": exported.path,
        "n_threads": target.n_threads,
    }
    return cal.Checker(spec, reporter.log)
