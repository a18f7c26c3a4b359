"""The Keras-file source: a user's own `.keras` network with its preprocessing inside (a
Rescaling or Normalization layer), exported like a Keras application. Files without one are
refused: `featstore backbones add` takes them with their preprocessing said."""

from __future__ import annotations

import json
from pathlib import Path

from featstore.backbones.export import export_keras
from featstore.backbones.onnx_file import existing, file_recipe
from featstore.backbones.options import BackboneOptions
from featstore.backbones.recipes import BackboneRecipe, BackboneSource, register_source
from featstore.deps import require
from featstore.errors import UnknownBackboneError
from featstore.reporter import Reporter


def _recipe(opts: BackboneOptions, layout, reporter: Reporter) -> BackboneRecipe:
    path = existing(opts.backbone)
    return file_recipe("keras", path, opts, _input_size(path))


def _input_size(path: Path) -> int | None:
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            config = json.loads(zf.read("config.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
        raise UnknownBackboneError(f"{path} is not a readable .keras model: {err}") from err
    if not _has_preprocessing(config):
        raise UnknownBackboneError(
            f"{path.name} has no preprocessing layer inside (Rescaling, Normalization): featstore cannot know "
            f"what it expects of its pixels; add it with `featstore backbones add NAME --from {path} "
            "--preprocess tf|caffe|torch|none`"
        )
    for layer in config.get("config", {}).get("layers", []):
        shape = layer.get("config", {}).get("batch_shape")
        if layer.get("class_name") == "InputLayer" and shape and len(shape) == 4:
            return shape[1]
    return None


#: Layers that take a network from pixels to its inputs: a file with one inside feeds on pixels.
PREPROCESSING_LAYERS = ("Rescaling", "Normalization", "PixelPreprocess")


def _has_preprocessing(config) -> bool:
    """Whether a Keras config (nested models included) holds a preprocessing layer."""
    if isinstance(config, dict):
        name = str(config.get("class_name", "")).rsplit(">", 1)[-1]
        return name in PREPROCESSING_LAYERS or any(_has_preprocessing(v) for v in config.values())
    if isinstance(config, list):
        return any(_has_preprocessing(v) for v in config)
    return False


def _keras_model(recipe: BackboneRecipe):
    return require("keras").models.load_model(recipe.source, compile=False), "none"


register_source(
    BackboneSource(
        "keras",
        "a Keras file",
        claims=lambda value, layout: Path(value).suffix.lower() == ".keras",
        recipe=_recipe,
        export=export_keras,
        keras_model=_keras_model,
        hint="a .keras file",
    )
)
