"""Backbones as ONNX files in `store/backbones/`, exported once and found again by recipe.

An export takes uint8 RGB NHWC pixels (preprocessing folded in) and returns pooled features;
finding a cached one imports no TensorFlow.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from featstore.backbones.recipes import RANDOM_INIT_SEED, BackboneRecipe, source_of
from featstore.data.options import size_text
from featstore.deps import available, require
from featstore.errors import ExportError, InvalidOptionError
from featstore.files import sha256_file, write_atomic
from featstore.reporter import SILENT, Reporter
from featstore.store.layout import StoreLayout

#: Largest relative error ||onnx - tf|| / ||tf|| an export may show on random pixels.
MAX_EXPORT_ERROR = 1e-4
ONNX_OPSET = 17
INPUT_NAME = "pixels"


@dataclass(frozen=True)
class ExportedBackbone:
    """An ONNX backbone in the store and what is known about it."""

    path: Path
    recipe: BackboneRecipe
    onnx_sha256: str
    n_features: int
    export_error: float | None
    export_seconds: float
    created: str
    onnx_size: int | None = None
    onnx_mtime_ns: int | None = None
    stored_digest: str | None = None

    @property
    def digest(self) -> str:
        """The identity feature sets and heads refer to: the recipe digest its sidecar records."""
        return self.stored_digest or self.recipe.digest

    def to_dict(self) -> dict:
        """Return a JSON-ready dict (the sidecar file's content)."""
        d = asdict(self)
        d.pop("stored_digest")
        d["path"] = str(self.path)
        d["recipe"] = self.recipe.to_dict()
        d["digest"] = self.digest
        return d

    @classmethod
    def from_dict(cls, data: dict) -> ExportedBackbone:
        """Rebuild from a sidecar dict."""
        data = dict(data)
        data["stored_digest"] = data.pop("digest", None)
        data["path"] = Path(data["path"])
        data["recipe"] = BackboneRecipe.from_dict(data["recipe"])
        return cls(**data)


def sidecar_path(onnx_path: Path) -> Path:
    """Return the JSON file next to an exported ONNX file."""
    return onnx_path.with_suffix(".json")


def load_export(path: Path) -> ExportedBackbone | None:
    """The export at `path` with its sidecar, if both are there and the file is unchanged (size
    and mtime, else sha256), else None."""
    meta = sidecar_path(path)
    if not (path.is_file() and meta.is_file()):
        return None
    try:
        info = ExportedBackbone.from_dict(json.loads(meta.read_text()))
    except (ValueError, TypeError, KeyError):
        return None
    st = path.stat()
    unchanged = (st.st_size, st.st_mtime_ns) == (info.onnx_size, info.onnx_mtime_ns)
    if not unchanged and sha256_file(path) != info.onnx_sha256:  # e.g. copied: check the bytes
        return None
    return replace(info, path=path)


def find_backbone(recipe: BackboneRecipe, layout: StoreLayout) -> ExportedBackbone | None:
    """Return the cached export of `recipe` if present and unchanged, else None. Where the source
    cannot export here (no Keras or tf2onnx) the newest export of an equal recipe is used."""
    info = load_export(layout.backbones / f"{recipe.file_stem}.onnx")
    if info is not None and info.recipe.digest == recipe.digest:
        return info
    if not source_of(recipe).reuse or (available("keras") and available("tf2onnx")):
        return None
    same = [
        found
        for path in layout.backbones.glob(f"{recipe.name}-{size_text(recipe.size)}-*.onnx")
        if (found := load_export(path)) is not None and found.recipe.to_dict() == recipe.to_dict()
    ]
    return max(same, key=lambda e: e.created, default=None)


def find_backbone_by_digest(layout: StoreLayout, digest: str) -> ExportedBackbone | None:
    """Return the export in `store/backbones/` whose recipe digest is `digest` (checked), or None."""
    if not layout.backbones.is_dir():
        return None
    for onnx_path in sorted(layout.backbones.glob(f"*-{digest[:12]}.onnx")):
        info = load_export(onnx_path)
        if info is not None and info.digest == digest:
            return info
    return None


def ensure_backbone(
    recipe: BackboneRecipe, layout: StoreLayout, reporter: Reporter = SILENT
) -> ExportedBackbone:
    """Return the ONNX export of `recipe`, exporting and verifying it first if not cached;
    ExportError when TensorFlow cannot build or convert it, or its output differs by more
    than `MAX_EXPORT_ERROR` on random pixels."""
    found = find_backbone(recipe, layout)
    if found is not None:
        return found
    layout.backbones.mkdir(parents=True, exist_ok=True)
    out = layout.backbones / f"{recipe.file_stem}.onnx"
    return source_of(recipe).export(recipe, out, reporter)


def write_export(recipe, out: Path, data, n_features, err, seconds) -> ExportedBackbone:
    """Write the ONNX backbone `data` (bytes or an ONNX model; one over 1.8 GB keeps its
    weights in `<out>.data` beside it) to `out` with its sidecar; return what is known of it."""
    if not isinstance(data, bytes):
        if data.ByteSize() > 1_800_000_000:
            import onnx

            onnx.save(data, str(out), save_as_external_data=True, location=out.name + ".data")
            data = out.read_bytes()
        else:
            data = data.SerializeToString()
    write_atomic(out, data)
    st = out.stat()
    info = ExportedBackbone(
        path=out,
        recipe=recipe,
        onnx_sha256=sha256_file(out),
        onnx_size=st.st_size,
        onnx_mtime_ns=st.st_mtime_ns,
        n_features=int(n_features),
        export_error=None if err is None else float(err),
        export_seconds=round(seconds, 3),
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    write_atomic(sidecar_path(out), json.dumps(info.to_dict(), indent=2).encode())
    return info


def import_onnx(recipe: BackboneRecipe, out: Path, reporter: Reporter = SILENT) -> ExportedBackbone:
    """Copy an ONNX backbone into the store at `out`, checked to return one vector per image."""
    from featstore.inference.runtimes import open_model, reference_runtime

    data = Path(recipe.source).read_bytes()
    t0 = time.perf_counter()
    try:
        session = open_model(data, reference_runtime())
        x = np.random.default_rng(0).integers(0, 256, (2, recipe.input_size, recipe.input_size, 3))
        y = session.run(x.astype(np.uint8))
    except Exception as err:  # noqa: BLE001 - any failure is the user's model
        raise ExportError(f"{recipe.source} does not run as a backbone: {err}") from err
    if y.ndim != 2 or y.shape[0] != 2:
        raise ExportError(
            f"{recipe.source} must return one feature vector per image (batch, features), "
            f"returned shape {tuple(y.shape)}"
        )
    return write_export(recipe, out, data, y.shape[1], None, time.perf_counter() - t0)


def _preprocess_layer_class():
    keras = require("keras")

    @keras.saving.register_keras_serializable(package="featstore")
    class PixelPreprocess(keras.layers.Layer):
        """uint8 RGB pixels -> the float input a backbone expects (its preprocess_input)."""

        def __init__(self, mode: str = "none", **kwargs):
            super().__init__(**kwargs)
            self.mode = mode

        def call(self, x):
            ops = keras.ops
            x = ops.cast(x, "float32")
            if self.mode == "tf":
                return x / 127.5 - 1.0
            if self.mode == "caffe":
                x = ops.flip(x, axis=-1)
                return x - ops.convert_to_tensor(np.array([103.939, 116.779, 123.68], "float32"))
            if self.mode == "torch":
                mean = np.array([0.485, 0.456, 0.406], "float32")
                std = np.array([0.229, 0.224, 0.225], "float32")
                return (x / 255.0 - mean) / std
            return x

        def get_config(self):
            return {**super().get_config(), "mode": self.mode}

    return PixelPreprocess


def build_keras_backbone(recipe: BackboneRecipe):
    """Build the Keras network of `recipe`, (N, H, W, 3) uint8 -> (N, n_features) float32; return
    `(model, reference)`, reference computing the same features the Keras way. ExportError
    when the source cannot be built in Keras at that size."""
    keras = require("keras")
    keras.utils.set_random_seed(RANDOM_INIT_SEED)
    size = recipe.input_size
    source = source_of(recipe)
    if source.keras_model is None:
        raise ExportError(f"{recipe.name} is {source.title}, which Keras cannot build")
    base, mode = source.keras_model(recipe)
    if recipe.layer:
        try:
            out = base.get_layer(recipe.layer).output
        except ValueError as err:
            names = [layer.name for layer in base.layers if "add" in layer.name or "pool" in layer.name]
            raise InvalidOptionError(
                "layer", f"{recipe.name} has no layer {recipe.layer!r}; some layers: {', '.join(names[-8:])}"
            ) from err
        base = keras.Model(base.input, out, name=f"{base.name}_{recipe.layer}")
    pool = {"avg": keras.layers.GlobalAveragePooling2D, "max": keras.layers.GlobalMaxPooling2D}
    pool_layer = pool[recipe.pooling](name="pool") if len(base.output.shape) == 4 else None
    if len(base.output.shape) not in (2, 4):
        raise ExportError(f"{recipe.name} output has shape {base.output.shape}; expected 2-D or 4-D")

    inputs = keras.Input((size, size, 3), dtype="uint8", name=INPUT_NAME)
    x = _preprocess_layer_class()(mode, name="preprocess")(inputs)
    x = base(x)
    if pool_layer is not None:
        x = pool_layer(x)
    model = keras.Model(inputs, x, name=f"featstore_{recipe.name}")

    def reference(pixels: np.ndarray) -> np.ndarray:
        x = pixels.astype("float32")
        if mode != "none":
            x = keras.applications.imagenet_utils.preprocess_input(x, mode=mode)
        y = base(x, training=False)
        return np.asarray(pool_layer(y) if pool_layer is not None else y)

    return model, reference


def export_keras(recipe: BackboneRecipe, out: Path, reporter: Reporter = SILENT) -> ExportedBackbone:
    """Export `recipe`'s Keras network to ONNX at `out`, verified against TensorFlow, with a sidecar."""
    reporter.log(f"exporting {recipe.label} to ONNX (once; cached in {out.parent})")
    t0 = time.perf_counter()
    model, reference = build_keras_backbone(recipe)
    x = np.random.default_rng(1).integers(0, 256, (2, recipe.input_size, recipe.input_size, 3))
    data, got, err = convert_keras(model, reference, x.astype(np.uint8), recipe.label)
    return write_export(recipe, out, data, got.shape[1], err, time.perf_counter() - t0)


def convert_keras(model, reference, check_pixels: np.ndarray, label: str) -> tuple[bytes, np.ndarray, float]:
    """Convert a Keras model taking (N, S, S, 3) uint8 to ONNX with tf2onnx; return (ONNX bytes,
    its output on `check_pixels`, relative error against `reference(check_pixels)`).
    ExportError when tf2onnx fails or the error exceeds `MAX_EXPORT_ERROR`."""
    from featstore.inference.runtimes import open_model, reference_runtime

    tf = require("tensorflow")
    tf2onnx = require("tf2onnx")
    size = check_pixels.shape[1]
    spec = [tf.TensorSpec((None, size, size, 3), tf.uint8, name=INPUT_NAME)]
    try:
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=ONNX_OPSET)
    except Exception as err:  # noqa: BLE001 - tf2onnx raises many types
        raise ExportError(f"tf2onnx could not convert {label}: {err}") from err
    data = proto.SerializeToString()
    got = open_model(data, reference_runtime()).run(check_pixels)
    want = np.asarray(reference(check_pixels), dtype=np.float32).reshape(got.shape)
    err = float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-12))
    if not np.isfinite(err) or err > MAX_EXPORT_ERROR:
        raise ExportError(
            f"the ONNX export of {label} differs from TensorFlow by {err:.2e} "
            f"(relative; limit {MAX_EXPORT_ERROR:.0e}); refusing it"
        )
    return data, got, err


def count_flops(model) -> int:
    """Floating-point operations of one image through `model` (2 per multiply-add), counting
    convolutions and dense layers (all but a few percent of a CNN's arithmetic)."""
    keras = require("keras")
    L = keras.layers
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += count_flops(layer)
            continue
        try:
            in_shape, out_shape = layer.input.shape, layer.output.shape
        except (AttributeError, ValueError):
            continue
        if isinstance(in_shape, list) or isinstance(out_shape, list):
            continue
        if isinstance(layer, L.DepthwiseConv2D):
            kh, kw = layer.kernel_size
            total += 2 * int(np.prod(out_shape[1:])) * kh * kw
        elif isinstance(layer, L.SeparableConv2D):
            kh, kw = layer.kernel_size
            cin, mult = in_shape[-1], layer.depth_multiplier
            oh, ow, cout = out_shape[1:]
            total += 2 * oh * ow * cin * mult * (kh * kw + cout)
        elif isinstance(layer, L.Conv2D):
            kh, kw = layer.kernel_size
            cin = in_shape[-1] // getattr(layer, "groups", 1)
            total += 2 * int(np.prod(out_shape[1:])) * kh * kw * cin
        elif isinstance(layer, L.Dense):
            total += 2 * int(np.prod(out_shape[1:])) * in_shape[-1]
    return int(total)
