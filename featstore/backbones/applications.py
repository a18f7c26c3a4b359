"""The Keras applications featstore knows by name: how each is built and fed, where Keras keeps its
ImageNet weights, and its figures from `catalog.json`. No TensorFlow."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from featstore.errors import UnknownBackboneError
from featstore.inference.devices import activation_bytes, max_input_size, memory_bytes
from featstore.options import Record

PREPROCESS_MODES = ("caffe", "tf", "torch", "none")
CATALOG_PATH = Path(__file__).with_name("catalog.json")


@dataclass(frozen=True)
class BackboneSpec(Record):
    """One registered backbone: a `keras.applications` constructor and how it is fed."""

    name: str
    keras_name: str
    input_size: int
    preprocess: str
    weights_file: str
    min_size: int = 32
    aliases: tuple[str, ...] = field(default_factory=tuple)


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
    """Refuse an input size above `max_input_size()` before any work (UnknownBackboneError naming
    the memory one image would need)."""
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


def load_catalog() -> dict[str, dict]:
    """Return the computed figures per backbone name (empty if the file is missing)."""
    try:
        return json.loads(CATALOG_PATH.read_text())
    except (OSError, ValueError):
        return {}
