"""Numeric precision of a backbone run (fp32, int8 or fp16) and its model files.

Owns `PrecisionOptions`, the precision variants of an export kept next to the fp32 file in `store/backbones/`
(`<fp32 stem>-int8-<key>.onnx` plus a JSON sidecar), their cache keys and lookups, and which
precision may run on which device. The model transformations live in `quantize`, the
calibration sample and the accuracy check in `calibration`. Imports `errors`, `files`,
`options`, `store.layout` and `data.decode`; `quantize`, `calibration` and `runtime` inside the
functions that use them. Never imports TensorFlow.

A variant's `digest` is what feature sets and heads record: for fp32 it is the export's recipe
digest (so fp32 feature sets are what they always were); for int8 it hashes the fp32 digest,
the calibration sample's digest and the quantization settings; for fp16 the fp32 digest and
the conversion settings. Features of different precisions therefore never mix, and a head
refuses features of another precision as it refuses another backbone.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from featstore.data.decode import DecodeOptions, resolve_decoder
from featstore.errors import DeviceError, InvalidOptionError, StoreError
from featstore.files import sha256_file
from featstore.options import Options, check_choice
from featstore.store.layout import StoreLayout

PRECISIONS = ("fp32", "int8", "fp16")
#: A warning is given when int8 features lose more accuracy than this (percentage points).
MAX_ACCURACY_LOSS_POINTS = 0.5
#: The check's timing of int8 against fp32 counts from this many images on.
MIN_TIMED_IMAGES = 64


def check_precision(precision: str, device: str) -> str:
    """Return `precision` if it can run on the resolved `device` (cpu|cuda|tensorrt).

    fp16 needs a GPU: ONNX Runtime's CPU provider has almost no fp16 kernels and runs such a
    model slower than fp32 (see README, "Precision and speed").

    Raises
    ------
    InvalidOptionError
        An unknown precision.
    DeviceError
        fp16 where no GPU is used.
    """
    _check_name(precision)
    if precision == "fp16" and device == "cpu":
        raise DeviceError(
            "--precision fp16 runs on a GPU (--device cuda or tensorrt), and no GPU is used here; "
            "on the CPU use --precision int8 (faster) or fp32"
        )
    return precision


def _check_name(precision: str) -> str:
    return check_choice("precision", precision, PRECISIONS)


@dataclass(frozen=True)
class PrecisionOptions(Options):
    """The precision features are computed at: fp32; int8 (calibrated on `n_calibration` images,
    default 200, checked against fp32 on `n_check`, default 300; `recalibrate` makes a new int8
    model instead of reusing the store's); fp16 (GPU only)."""

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


@dataclass(frozen=True)
class ModelVariant:
    """The ONNX file a run executes at one precision, and what identifies its features.

    `check` is the int8 accuracy check (see `calibration.compare_features`); `calibration`
    names the dataset, image count and sample digest the int8 ranges came from.
    """

    path: Path
    precision: str
    digest: str
    base_digest: str
    onnx_sha256: str
    settings: dict = field(default_factory=dict)
    calibration: dict | None = None
    check: dict | None = None
    created: str = ""
    seconds: float = 0.0
    onnx_size: int | None = None
    onnx_mtime_ns: int | None = None

    def to_dict(self) -> dict:
        """Return a JSON-ready dict (the sidecar file's content)."""
        return {**asdict(self), "path": str(self.path)}

    @classmethod
    def from_dict(cls, data: dict) -> ModelVariant:
        """Rebuild from a sidecar dict."""
        return cls(**{**data, "path": Path(data["path"])})

    def describe(self) -> dict:
        """The attributes a feature set records about the model that computed it."""
        return {
            "precision": self.precision,
            "digest": self.digest,
            "base_digest": self.base_digest,
            "onnx_sha256": self.onnx_sha256,
            "file": self.path.name,
            "settings": self.settings,
            "calibration": self.calibration,
            "check": self.check,
        }


def fp32_variant(exported) -> ModelVariant:
    """The fp32 variant: the export itself, its digest unchanged."""
    return ModelVariant(
        exported.path,
        "fp32",
        exported.digest,
        exported.digest,
        exported.onnx_sha256,
        created=exported.created,
    )


def _onnxruntime_version() -> str:
    import importlib.metadata as md

    for dist in ("onnxruntime-gpu", "onnxruntime"):
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            continue
    return "absent"


def variant_digest(base_digest: str, precision: str, settings: dict, calibration_digest: str | None) -> str:
    """Hex SHA-256 of what makes a variant: fp32 digest, precision, settings, calibration sample."""
    payload = {
        "base": base_digest,
        "precision": precision,
        "settings": settings,
        "calibration": calibration_digest,
        "onnxruntime": _onnxruntime_version(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _variants(layout: StoreLayout, base_stem: str, precision: str) -> list[ModelVariant]:
    out = []
    for meta in sorted(layout.backbones.glob(f"{base_stem}-{precision}-*.json")):
        try:
            info = ModelVariant.from_dict(json.loads(meta.read_text()))
        except (OSError, ValueError, TypeError, KeyError):
            continue
        path = meta.with_suffix(".onnx")
        if not path.is_file():
            continue
        st = path.stat()
        if (st.st_size, st.st_mtime_ns) != (info.onnx_size, info.onnx_mtime_ns) and sha256_file(
            path
        ) != info.onnx_sha256:
            continue
        out.append(ModelVariant.from_dict({**info.to_dict(), "path": path}))
    return out


def find_variant(layout: StoreLayout, digest: str) -> ModelVariant | None:
    """Return the stored variant whose digest is `digest` (any precision), or None."""
    if not layout.backbones.is_dir():
        return None
    for meta in layout.backbones.glob(f"*-*-{digest[:12]}.json"):
        stem = meta.stem.rsplit("-", 2)[0]
        for v in _variants(layout, stem, meta.stem.rsplit("-", 2)[1]):
            if v.digest == digest:
                return v
    return None


def latest_variant(layout: StoreLayout, base_stem: str, precision: str) -> ModelVariant | None:
    """Return the most recently made `precision` variant of the export `base_stem`, or None."""
    found = _variants(layout, base_stem, precision)
    return max(found, key=lambda v: (v.created, v.onnx_mtime_ns or 0)) if found else None


def _write(
    layout: StoreLayout, base_stem: str, variant: ModelVariant, make: Callable[[Path], dict | None]
) -> ModelVariant:
    """Make the variant's file with `make(tmp_path)` (which may return fields to record, such
    as the accuracy check), rename it into place, then write its sidecar; both atomic."""
    from featstore.files import new_temp, write_atomic

    t0 = time.perf_counter()
    out = layout.backbones / f"{base_stem}-{variant.precision}-{variant.digest[:12]}.onnx"
    tmp = Path(new_temp(out.parent, out.name))
    try:
        extra = make(tmp) or {}
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    st = out.stat()
    info = {
        **variant.to_dict(),
        **extra,
        "path": out,
        "onnx_sha256": sha256_file(out),
        "onnx_size": st.st_size,
        "onnx_mtime_ns": st.st_mtime_ns,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    variant = ModelVariant.from_dict(info)
    write_atomic(out.with_suffix(".json"), json.dumps(variant.to_dict(), indent=2).encode())
    return variant


def ensure_fp16(exported, layout: StoreLayout, log: Callable[[str], None]) -> ModelVariant:
    """Return the fp16 variant of `exported`, converting it once (uint8 in, float32 out kept)."""
    from featstore.inference.quantize import FP16_SETTINGS, convert_fp16

    digest = variant_digest(exported.digest, "fp16", FP16_SETTINGS, None)
    found = find_variant(layout, digest)
    if found is not None:
        return found
    log(f"converting {exported.recipe.label} to fp16 (once; cached in {layout.backbones})")
    v = ModelVariant(exported.path, "fp16", digest, exported.digest, "", dict(FP16_SETTINGS))
    return _write(layout, exported.recipe.file_stem, v, lambda tmp: convert_fp16(exported.path, tmp))


def ensure_int8(
    exported,
    layout: StoreLayout,
    sample: Callable[[], object] | None,
    check: Callable[[Path], dict] | None,
    recalibrate: bool,
    log: Callable[[str], None],
) -> ModelVariant:
    """Return an int8 variant of `exported`: the latest one in the store unless `recalibrate`,
    else one calibrated on `sample()` (a `calibration.Sample`), checked by `check(int8_path)`.

    Reusing the store's int8 model keeps the features of every dataset extracted at int8
    comparable, so a head trained on one can score another.

    Raises
    ------
    StoreError
        No int8 model exists and no images were given to calibrate one.
    ExportError
        Quantization failed.
    """
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
    if sample is None:
        raise StoreError(
            f"no int8 model of {exported.recipe.label} in {layout.backbones}; "
            "run extract --precision int8 on your images first, which calibrates one"
        )
    s = sample()
    digest = variant_digest(exported.digest, "int8", INT8_SETTINGS, s.digest)
    found = find_variant(layout, digest)
    if found is not None:
        return found
    log(f"quantizing {exported.recipe.label} to int8, calibrated on {len(s.pixels)} of your images (once)")
    v = ModelVariant(exported.path, "int8", digest, exported.digest, "", dict(INT8_SETTINGS), s.describe())

    def make(tmp: Path) -> dict:
        quantize_int8(exported.path, s.pixels, tmp)
        return {"check": check(tmp) if check is not None else None}

    return _write(layout, stem, v, make)


def precision_label(label: str, precision: str) -> str:
    """The backbone label of a feature set at `precision`: `vgg16`, `vgg16-int8`, `vgg16-fp16`."""
    return label if precision == "fp32" else f"{label}-{precision}"


def speed_warning(variant: ModelVariant) -> str | None:
    """A one-line warning when the int8 model ran over 10 % slower than fp32 in its check
    (timed on at least `MIN_TIMED_IMAGES` images, else the timing is too short to say)."""
    c = variant.check or {}
    f, q = c.get("fp32_images_per_s"), c.get("int8_images_per_s")
    if not f or not q or q >= 0.9 * f or c.get("n_images", 0) < MIN_TIMED_IMAGES:
        return None
    return (
        f"the int8 model ran at {q:.1f} images/s against {f:.1f} for fp32 in its check: int8 does not "
        "pay off for this backbone on this CPU (operations int8 does not cover run in float between "
        "conversions); use --precision fp32"
    )


def accuracy_warning(variant: ModelVariant) -> str | None:
    """A one-line warning when the int8 check lost more than `MAX_ACCURACY_LOSS_POINTS`."""
    c = variant.check or {}
    loss = c.get("accuracy_loss_points")
    if loss is None or loss <= MAX_ACCURACY_LOSS_POINTS:
        return None
    held = "held-out " if c.get("held_out") else ""
    return (
        f"int8 features lose {loss:.1f} accuracy points against fp32 (logistic head, {c.get('n_images')} "
        f"{held}images: {100 * c['fp32_accuracy']:.1f} % -> {100 * c['int8_accuracy']:.1f} %), more "
        f"than {MAX_ACCURACY_LOSS_POINTS} points; use --precision fp32 where accuracy matters"
    )


def prepare_model(
    exported,
    precision: PrecisionOptions | str,
    layout: StoreLayout,
    *,
    dataset=None,
    decode: DecodeOptions | None = None,
    n_threads: int | None = None,
    log: Callable[[str], None] | None = None,
    prefer: str | None = None,
) -> ModelVariant:
    """Return the model `exported` runs as at `precision`, making and caching it when needed.

    fp32 is the export itself; fp16 is converted once; int8 reuses, unless `recalibrate`, the
    variant whose digest is `prefer` (the model an existing feature set was made with) when it
    is still stored, else the store's latest int8 model of this export, else calibrates one on
    `n_calibration` images of `dataset` (a `data.scan.Dataset`) spread over it, and checks it
    against fp32 on `n_check` other images (cosine similarity, cross-validated logistic
    accuracy; 0 skips the check).

    Parameters
    ----------
    exported
        The fp32 `backbones.export.ExportedBackbone`.
    precision
        `PrecisionOptions`, or just the precision's name (fp32, int8, fp16).
    layout
        The store whose `backbones/` folder keeps the variants.
    dataset, decode
        The images that calibrate and check a new int8 model, decoded as `decode` says
        (default: squash, the pillow decoder) and as `extract` decodes them.
    n_threads, log, prefer
        ONNX Runtime threads of the check; a callback for notes; the digest to reuse first.

    Returns
    -------
    ModelVariant
        The model file, its digest (what feature sets record), and for int8 its calibration
        and accuracy check.

    Raises
    ------
    InvalidOptionError
        A bad precision or sample size.
    StoreError, ExportError
        No int8 model and no dataset to calibrate one; quantization or conversion failed.
    """
    opts = (PrecisionOptions(precision) if isinstance(precision, str) else precision).check()
    log = log or (lambda msg: None)
    if opts.precision == "fp32":
        return fp32_variant(exported)
    if opts.precision == "fp16":
        return ensure_fp16(exported, layout, log)
    if prefer and not opts.recalibrate:
        found = find_variant(layout, prefer)
        if found is not None and found.base_digest == exported.digest and found.precision == "int8":
            return found
    sample_fn = check_fn = None
    if dataset is not None:
        decode = decode or DecodeOptions(decoder="pillow")
        sample_fn, check_fn = _calibration(exported, dataset, opts, decode, n_threads, log)
    return ensure_int8(exported, layout, sample_fn, check_fn, opts.recalibrate, log)


def _calibration(exported, dataset, opts: PrecisionOptions, decode: DecodeOptions, n_threads, log):
    """(sample(), check(int8_path)): decode the calibration images of `dataset`, and compare an
    int8 model with fp32 on other images of it (None when there are none to check on)."""
    from featstore.inference import calibration as cal

    n_cal = cal.N_CALIBRATION if opts.n_calibration is None else opts.n_calibration
    n_chk = cal.N_CHECK if opts.n_check is None else opts.n_check
    items, size = dataset.items, exported.recipe.input_size
    decoder = resolve_decoder(decode.decoder)
    cal_idx = cal.spread(len(items), n_cal)
    chk_idx = cal.spread(len(items), n_chk, exclude=set(cal_idx)) or (cal_idx[:n_chk] if n_chk else [])

    def sample_fn():
        log(f"decoding {len(cal_idx)} calibration images")
        return cal.decode_sample(dataset.name, [items[i] for i in cal_idx], size, decode.resize, decoder)

    def check_fn(int8_path: Path) -> dict | None:
        if not chk_idx:
            return None
        held_out = bool(set(chk_idx) - set(cal_idx))
        log(f"checking int8 against fp32 on {len(chk_idx)} {'held-out ' if held_out else ''}images")
        s = cal.decode_sample(dataset.name, [items[i] for i in chk_idx], size, decode.resize, decoder)
        return {**_compare_int8(exported.path, int8_path, s, n_threads), "held_out": held_out}

    return sample_fn, check_fn


def _compare_int8(fp32_path: Path, int8_path: Path, sample, n_threads: int | None) -> dict:
    """`calibration.compare_features` of the two models on `sample`, with each one's images/s."""
    from featstore.inference import calibration as cal
    from featstore.runtime import open_session

    fp32, int8 = open_session(fp32_path, "cpu", n_threads), open_session(int8_path, "cpu", n_threads)
    ref, q = cal.run_batches(fp32, sample.pixels), cal.run_batches(int8, sample.pixels)
    n = len(sample.pixels)
    return {
        **cal.compare_features(ref, q, sample.labels),
        "fp32_images_per_s": round(n / fp32.inference_s, 2) if fp32.inference_s else None,
        "int8_images_per_s": round(n / int8.inference_s, 2) if int8.inference_s else None,
    }
