"""The Keras-application source: a backbone by name (`vgg16`, `mobilenet_v2`, ...), built by
`keras.applications` with ImageNet weights (downloaded on first use), random ones (`none`) or a
weights file; its digest counts the Keras and tf2onnx versions that export it."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from featstore.backbones.applications import (
    check_input_size,
    get_backbone,
    imagenet_weights_path,
    load_catalog,
)
from featstore.backbones.export import export_keras
from featstore.backbones.options import BackboneOptions
from featstore.backbones.recipes import BackboneRecipe, BackboneSource, register_source
from featstore.deps import require
from featstore.errors import ExportError, UnknownBackboneError, WeightsNotFoundError
from featstore.files import sha256_file
from featstore.reporter import Reporter

#: Bumped whenever the export recipe changes in a way that changes the ONNX graph.
EXPORT_VERSION = 1


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def _recipe(opts: BackboneOptions, layout, reporter: Reporter) -> BackboneRecipe:
    spec = get_backbone(opts.backbone)
    size = int(opts.input_size or spec.input_size)
    if size < spec.min_size:
        raise UnknownBackboneError(f"{spec.name} needs an input of at least {spec.min_size} px, not {size}")
    check_input_size(spec, size)
    weights, weights_sha = _weights(spec, opts.weights, reporter)
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


def _weights(spec, weights: str | None, reporter: Reporter) -> tuple[str, str | None]:
    """(weights as recorded, their sha256): imagenet (fetched), none, or a file's absolute path."""
    if weights == "imagenet":
        from featstore.backbones.fetching import ensure_weights

        return weights, ensure_weights(spec.name, reporter=reporter).sha256
    if weights in ("none", None):
        return "none", None
    wpath = Path(weights).expanduser()
    if not wpath.is_file():
        raise WeightsNotFoundError(f"weights file {wpath} does not exist")
    return str(wpath.absolute()), sha256_file(wpath)


def _label(recipe: BackboneRecipe) -> str:
    label = recipe.name
    if recipe.input_size != get_backbone(recipe.name).input_size:
        label += f"-{recipe.input_size}px"
    if recipe.weights == "none":
        return label + "-random"
    if recipe.weights != "imagenet":
        label += f"-w{recipe.weights_sha256[:8]}"
    return label


def _keras_model(recipe: BackboneRecipe):
    keras = require("keras")
    spec = get_backbone(recipe.name)
    weights = None if recipe.weights == "none" else recipe.weights
    if weights == "imagenet":
        weights = str(imagenet_weights_path(spec))
    size = recipe.input_size
    try:
        model = getattr(keras.applications, spec.keras_name)(
            include_top=False, weights=weights, input_shape=(size, size, 3)
        )
    except ValueError as err:
        raise ExportError(f"{spec.name} cannot be built at {size} px: {err}") from err
    return model, spec.preprocess


def _figures(recipe: BackboneRecipe) -> tuple[int | None, float | None]:
    """The catalog's parameters and GFLOPs (scaled by the input area) of a whole network."""
    entry = load_catalog().get(recipe.name)
    if not entry or recipe.layer:
        return None, None
    scale = (recipe.input_size / entry["input_size"]) ** 2
    return entry["n_params"], round(entry["gflops"] * scale, 3)


def _known(value: str, layout=None) -> bool:
    """Whether `value` names (or is a Keras name or alias of) a registered Keras application."""
    try:
        get_backbone(value)
    except UnknownBackboneError:
        return False
    return True


register_source(
    BackboneSource(
        "registry",
        "a Keras application",
        claims=_known,
        recipe=_recipe,
        export=export_keras,
        label=_label,
        versions=lambda: {"export": EXPORT_VERSION, **{m: _version(m) for m in ("keras", "tf2onnx")}},
        keras_model=_keras_model,
        figures=_figures,
        reuse=True,
    )
)
