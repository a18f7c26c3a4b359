"""The backbone registry and export recipes: which network, which weights, which size, which layer.

Owns the names users type (`vgg16`, `mobilenet_v2`, ...), `BackboneOptions`, where ImageNet
weight files are looked up, and the digest that identifies one export. Imports `errors`,
`files`, `options` and `runtime` (memory limits); `store.run_files` and `backbones.weights`
inside `resolve_recipe`. Never imports TensorFlow: the export lives in
`featstore.backbones.export`.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from featstore.errors import InvalidOptionError, UnknownBackboneError, WeightsNotFoundError
from featstore.files import sha256_file  # noqa: F401 - re-exported: callers import it from here
from featstore.options import Options, build_options, check_choice
from featstore.runtime import activation_bytes, max_input_size, memory_bytes

#: Bumped whenever the export recipe changes in a way that changes the ONNX graph.
EXPORT_VERSION = 1

PREPROCESS_MODES = ("caffe", "tf", "torch", "none")
POOLINGS = ("avg", "max")
#: Seed used to initialise `--weights none` backbones, so the same recipe gives the same network.
RANDOM_INIT_SEED = 0


@dataclass(frozen=True)
class BackboneSpec:
    """One registered backbone: a `keras.applications` constructor and how it is fed."""

    name: str
    keras_name: str
    input_size: int
    preprocess: str
    weights_file: str
    min_size: int = 32
    aliases: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        """Return a JSON-ready dict of the spec."""
        return asdict(self)


_REGISTRY: dict[str, BackboneSpec] = {}
_ALIASES: dict[str, str] = {}


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    """Add `spec` to the registry under its name, its Keras name and its aliases."""
    if spec.preprocess not in PREPROCESS_MODES:
        raise ValueError(f"unknown preprocess mode {spec.preprocess!r}")
    _REGISTRY[spec.name] = spec
    for alias in (spec.name, spec.keras_name, *spec.aliases):
        _ALIASES[_norm(alias)] = spec.name
    return spec


def _norm(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "")


def available_backbones() -> list[str]:
    """Return the registered backbone names, in registry order."""
    return list(_REGISTRY)


def get_backbone(name: str) -> BackboneSpec:
    """Return the spec registered as `name` (case and `_`/`-` insensitive, Keras names work)."""
    key = _ALIASES.get(_norm(name))
    if key is None:
        raise UnknownBackboneError(
            f"unknown backbone {name!r}; valid names: {', '.join(available_backbones())} "
            "(or a path to a .onnx or .keras file)"
        )
    return _REGISTRY[key]


def _reg(name, keras_name, size, mode, weights_file, min_size=32, aliases=()):
    register_backbone(BackboneSpec(name, keras_name, size, mode, weights_file, min_size, aliases))


_TF_KERNELS = "_weights_tf_dim_ordering_tf_kernels_notop.h5"
_reg("vgg16", "VGG16", 224, "caffe", "vgg16" + _TF_KERNELS)
_reg("vgg19", "VGG19", 224, "caffe", "vgg19" + _TF_KERNELS)
_reg("resnet50", "ResNet50", 224, "caffe", "resnet50" + _TF_KERNELS)
_reg("resnet101", "ResNet101", 224, "caffe", "resnet101" + _TF_KERNELS)
_reg("resnet152", "ResNet152", 224, "caffe", "resnet152" + _TF_KERNELS)
_reg("resnet50_v2", "ResNet50V2", 224, "tf", "resnet50v2" + _TF_KERNELS)
_reg("resnet101_v2", "ResNet101V2", 224, "tf", "resnet101v2" + _TF_KERNELS)
_reg("resnet152_v2", "ResNet152V2", 224, "tf", "resnet152v2" + _TF_KERNELS)
_reg("inception_v3", "InceptionV3", 299, "tf", "inception_v3" + _TF_KERNELS, 75)
_reg("inception_resnet_v2", "InceptionResNetV2", 299, "tf", "inception_resnet_v2" + _TF_KERNELS, 75)
_reg("xception", "Xception", 299, "tf", "xception" + _TF_KERNELS, 71)
_reg("mobilenet", "MobileNet", 224, "tf", "mobilenet_1_0_224_tf_no_top.h5")
_reg(
    "mobilenet_v2",
    "MobileNetV2",
    224,
    "tf",
    "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
)
_reg(
    "mobilenet_v3_small",
    "MobileNetV3Small",
    224,
    "none",
    "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
)
_reg(
    "mobilenet_v3_large",
    "MobileNetV3Large",
    224,
    "none",
    "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5",
)
_reg("densenet121", "DenseNet121", 224, "torch", "densenet121" + _TF_KERNELS)
_reg("densenet169", "DenseNet169", 224, "torch", "densenet169" + _TF_KERNELS)
_reg("densenet201", "DenseNet201", 224, "torch", "densenet201" + _TF_KERNELS)
_reg("nasnet_mobile", "NASNetMobile", 224, "tf", "nasnet_mobile_no_top.h5")
_reg("nasnet_large", "NASNetLarge", 331, "tf", "nasnet_large_no_top.h5")
for _i, _size in enumerate((224, 240, 260, 300, 380, 456, 528, 600)):
    _reg(f"efficientnet_b{_i}", f"EfficientNetB{_i}", _size, "none", f"efficientnetb{_i}_notop.h5")
for _v, _size in (("b0", 224), ("b1", 240), ("b2", 260), ("b3", 300), ("s", 384)):
    _reg(
        f"efficientnet_v2_{_v}",
        f"EfficientNetV2{_v.upper()}",
        _size,
        "none",
        f"efficientnetv2-{_v}_notop.h5",
    )
_reg("convnext_tiny", "ConvNeXtTiny", 224, "none", "convnext_tiny_notop.h5")


def keras_home() -> Path:
    """Return Keras' cache folder ($KERAS_HOME, default ~/.keras)."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras").expanduser()


def imagenet_weights_path(spec: BackboneSpec) -> Path:
    """Return where Keras keeps the no-top ImageNet weights of `spec` ($KERAS_HOME/models/...)."""
    return keras_home() / "models" / spec.weights_file


def check_input_size(spec_or_name, size: int) -> None:
    """Refuse an input size no backbone run can take in memory, before any work.

    Raises
    ------
    UnknownBackboneError
        `size` above `max_input_size()`, with the memory one image would need.
    """
    limit = max_input_size()
    if size <= limit:
        return
    name = getattr(spec_or_name, "name", spec_or_name)
    need = activation_bytes(size)
    raise UnknownBackboneError(
        f"an input size of {size} px is too large for {name}: one image would need about "
        f"{need / 2**30:,.0f} GiB for its largest activation (this machine has "
        f"{memory_bytes() / 2**30:,.0f} GiB); use at most {limit} px"
    )


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


@dataclass(frozen=True)
class BackboneRecipe:
    """Everything that determines one exported ONNX backbone.

    `kind` is "registry" (a `keras.applications` network), "onnx" or "keras" (a user file), or
    "finetune" (the backbone.onnx of a fine-tune run; its weights sha256 is that file's).
    """

    kind: str
    name: str
    input_size: int
    weights: str
    weights_sha256: str | None
    layer: str | None
    pooling: str
    source: str | None = None
    preprocess: str = "none"

    def to_dict(self) -> dict:
        """Return a JSON-ready dict of the recipe."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> BackboneRecipe:
        """Rebuild a recipe from `to_dict` output."""
        return cls(**data)

    @functools.cached_property
    def digest(self) -> str:
        """Hex SHA-256 of the recipe, the weights and the exporter versions: the cache key."""
        payload = self.to_dict()
        payload.pop("source")  # where a file was found does not change what it computes
        if self.kind == "registry":
            payload["versions"] = {
                "export": EXPORT_VERSION,
                "keras": _version("keras"),
                "tf2onnx": _version("tf2onnx"),
            }
        blob = json.dumps(payload, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()

    @property
    def label(self) -> str:
        """Name of the backbone inside feature set names: `vgg16`, `vgg16-160px`, ..."""
        parts = [self.name]
        if self.kind == "registry":
            spec = get_backbone(self.name)
            if self.input_size != spec.input_size:
                parts.append(f"-{self.input_size}px")
            if self.weights == "none":
                parts.append("-random")
            elif self.weights != "imagenet":
                parts.append(f"-w{self.weights_sha256[:8]}")
        if self.layer:
            parts.append(f".{self.layer}")
        if self.pooling != "avg":
            parts.append(f"-{self.pooling}")
        return "".join(parts)

    @property
    def file_stem(self) -> str:
        """File name (no suffix) of the exported ONNX in `store/backbones/`."""
        return f"{self.name}-{self.input_size}-{self.digest[:12]}"


@dataclass(frozen=True)
class BackboneOptions(Options):
    """Which network makes the features: `backbone` (a registry name, a .onnx/.keras file or
    `finetune:<run-id>`), its `weights` (imagenet, none or a file), the square `input_size` in
    px (default the backbone's own), an intermediate `layer`, and the `pooling` (avg or max)."""

    backbone: str = "mobilenet_v2"
    weights: str = "imagenet"
    input_size: int | None = None
    layer: str | None = None
    pooling: str = "avg"

    def check(self) -> BackboneOptions:
        """Raise InvalidOptionError for an unknown pooling or an input size below 1 px."""
        check_choice("pooling", self.pooling, POOLINGS)
        if self.input_size is not None and self.input_size < 1:
            raise InvalidOptionError("input_size", f"must be at least 1 px, not {self.input_size}")
        return self


def resolve_recipe(
    backbone: BackboneOptions | str,
    *,
    layout=None,
    progress=None,
    log=None,
    **fields,
) -> BackboneRecipe:
    """Turn backbone options into a recipe, fetching ImageNet weights; no TensorFlow.

    Parameters
    ----------
    backbone
        A `BackboneOptions`, or a backbone name (registry name, .onnx/.keras file, or
        `finetune:<run-id>`) with other `BackboneOptions` fields as keywords:
        `resolve_recipe("vgg16", weights="none", input_size=64)`.
    layout
        The `StoreLayout` a `finetune:<run-id>` is looked up in (default: the default store);
        its `backbone.onnx` is checked against the sha256 its run recorded.
    progress, log
        With weights "imagenet", the official file is downloaded into Keras' cache on first
        use (`featstore.backbones.weights`); `progress(bytes_done, bytes_total, "download")`
        and `log(line)` report it.
    **fields
        `BackboneOptions` fields that replace those of `backbone`.

    Returns
    -------
    BackboneRecipe
        Everything that determines the export, with its digest.

    Raises
    ------
    InvalidOptionError
        A bad option value (pooling, input size, layer), or a keyword that is no option.
    UnknownBackboneError
        `backbone` is neither a registered name nor an existing .onnx/.keras file, or an input
        size or option the network cannot take.
    WeightsError
        ImageNet weights that cannot be fetched or are not the official file
        (`featstore.backbones.weights.ensure_weights`), or a weights path that does not exist.
    StoreError
        The fine-tune run is unknown, unfinished, or its backbone.onnx changed.
    """
    opts = backbone_options(backbone, **fields)
    from featstore.store import run_files as runstore

    run_id = runstore.parse_ref(opts.backbone)
    if run_id is not None:
        return _finetune_recipe(run_id, layout, opts)
    path = Path(opts.backbone).expanduser()
    if path.suffix.lower() in (".onnx", ".keras"):
        return _file_recipe(path, opts)
    spec = get_backbone(opts.backbone)
    size = int(opts.input_size or spec.input_size)
    if size < spec.min_size:
        raise UnknownBackboneError(f"{spec.name} needs an input of at least {spec.min_size} px, not {size}")
    check_input_size(spec, size)
    weights, weights_sha = _resolve_weights(spec, opts.weights, progress, log)
    return BackboneRecipe(
        kind="registry",
        name=spec.name,
        input_size=size,
        weights=weights,
        weights_sha256=weights_sha,
        layer=opts.layer,
        pooling=opts.pooling,
        preprocess=spec.preprocess,
    )


def backbone_options(backbone: BackboneOptions | str, **fields) -> BackboneOptions:
    """Return `backbone` as checked `BackboneOptions`: a name becomes `BackboneOptions(name)`,
    and `fields` replace the object's fields.

    Raises
    ------
    InvalidOptionError
        A bad value, or a keyword that is no field of `BackboneOptions`.
    """
    if isinstance(backbone, str):
        backbone = BackboneOptions(backbone=backbone)
    if fields:
        (backbone,) = build_options({**backbone.to_dict(), **fields}, BackboneOptions)
    return backbone.check()


def _resolve_weights(spec: BackboneSpec, weights: str | None, progress, log) -> tuple[str, str | None]:
    """(weights as recorded, their sha256): imagenet (fetched), none, or a file's absolute path."""
    if weights == "imagenet":
        from featstore.backbones.weights import ensure_weights

        return weights, ensure_weights(spec.name, progress=progress, log=log).sha256
    if weights in ("none", None):
        return "none", None
    wpath = Path(weights).expanduser()
    if not wpath.is_file():
        raise WeightsNotFoundError(f"weights file {wpath} does not exist")
    return str(wpath.absolute()), sha256_file(wpath)


def _file_recipe(path: Path, opts: BackboneOptions) -> BackboneRecipe:
    if not path.is_file():
        raise UnknownBackboneError(f"backbone file {path} does not exist")
    kind = path.suffix.lower().lstrip(".")
    if kind == "onnx" and opts.layer:
        raise InvalidOptionError("layer", "works with registry and .keras backbones, not .onnx")
    size = opts.input_size or (_onnx_input_size(path) if kind == "onnx" else None)
    if size is None:
        size = _keras_input_size(path) if kind == "keras" else None
    if size is None:
        raise InvalidOptionError("input_size", f"{path} has no fixed input size; give one")
    check_input_size(path.name, int(size))
    stem = "".join(c if c.isalnum() or c in "_-" else "_" for c in path.stem) or "model"
    return BackboneRecipe(
        kind=kind,
        name=stem,
        input_size=int(size),
        weights="file",
        weights_sha256=sha256_file(path),
        layer=opts.layer,
        pooling=opts.pooling,
        source=str(path.absolute()),
    )


def finetune_label(run_id: str) -> str:
    """Backbone label of fine-tune run `run_id` in feature set names: `finetune-<run-id>`."""
    return f"finetune-{run_id}"


def _finetune_recipe(run_id: str, layout, opts: BackboneOptions) -> BackboneRecipe:
    from featstore.store import run_files as runstore
    from featstore.store.layout import resolve_store

    layout = layout if layout is not None else resolve_store()
    path, meta = runstore.run_file(layout, run_id, runstore.BACKBONE_FILE)
    size = int(meta["input_size"])
    ref = f"{runstore.PREFIX}{run_id}"
    if opts.input_size and int(opts.input_size) != size:
        raise UnknownBackboneError(
            f"{ref} takes {size} px images (its network was trained so); leave the input size unset"
        )
    if opts.layer or opts.pooling != "avg":
        raise UnknownBackboneError(
            f"{ref} is exported with its own pooled features; --layer and --pooling max do not apply "
            f"(use {runstore.run_dir(layout, run_id) / runstore.CHECKPOINT_FILE} as a .keras backbone for those)"
        )
    return BackboneRecipe(
        kind="finetune",
        name=finetune_label(run_id),
        input_size=size,
        weights="file",
        weights_sha256=meta["files_sha256"][runstore.BACKBONE_FILE],
        layer=None,
        pooling="avg",
        source=str(path),
    )


def _onnx_input_size(path: Path) -> int | None:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # noqa: BLE001 - any parse failure is the user's file
        raise UnknownBackboneError(f"{path} is not a readable ONNX model: {err}") from err
    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if len(inputs) != 1:
        raise UnknownBackboneError(f"{path} must have exactly one image input, found {len(inputs)}")
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != 4 or dims[3].dim_value not in (0, 3):
        raise UnknownBackboneError(
            f"{path} must take NHWC RGB pixels (batch, height, width, 3); its input has "
            f"shape {[d.dim_value or d.dim_param for d in dims]}"
        )
    h, w = dims[1].dim_value, dims[2].dim_value
    if h and w and h != w:
        raise UnknownBackboneError(f"{path} takes {h}x{w} images; only square inputs are supported")
    return h or None


def _keras_input_size(path: Path) -> int | None:
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            config = json.loads(zf.read("config.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
        raise UnknownBackboneError(f"{path} is not a readable .keras model: {err}") from err
    for layer in config.get("config", {}).get("layers", []):
        shape = layer.get("config", {}).get("batch_shape")
        if layer.get("class_name") == "InputLayer" and shape and len(shape) == 4:
            return shape[1]
    return None
