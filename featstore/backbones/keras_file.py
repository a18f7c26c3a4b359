"""The Keras-file source: a user's own `.keras` network, exported like a Keras application (its
preprocessing, if any, inside the file)."""

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
    for layer in config.get("config", {}).get("layers", []):
        shape = layer.get("config", {}).get("batch_shape")
        if layer.get("class_name") == "InputLayer" and shape and len(shape) == 4:
            return shape[1]
    return None


def _keras_model(recipe: BackboneRecipe):
    return require("keras").models.load_model(recipe.source, compile=False), "none"


register_source(
    BackboneSource(
        "keras",
        "a Keras file",
        claims=lambda value: Path(value).suffix.lower() == ".keras",
        recipe=_recipe,
        export=export_keras,
        keras_model=_keras_model,
        hint="a .keras file",
    )
)
