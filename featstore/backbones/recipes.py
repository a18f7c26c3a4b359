"""Backbone recipes, and the registry of where backbones come from.

A `BackboneRecipe` determines one exported backbone; its digest keys every feature set and head
made with it. A `BackboneSource` (Keras application, Keras file, ONNX file, fine-tune run) is
one module that registers itself; nothing outside it branches on its kind.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from featstore.backbones.applications import available_backbones
from featstore.backbones.options import BackboneOptions
from featstore.data.options import Size, size_text
from featstore.errors import UnknownBackboneError
from featstore.options import Record
from featstore.registry import Registry
from featstore.reporter import SILENT, Reporter

if TYPE_CHECKING:
    from featstore.store.layout import StoreLayout

#: Seed used to initialise `--weights none` backbones, so the same recipe gives the same network.
RANDOM_INIT_SEED = 0


@dataclass(frozen=True)
class BackboneRecipe(Record):
    """Everything that determines one exported ONNX backbone: its source's `kind` ("registry",
    "keras", "onnx", "finetune", "added"), what it was initialised with (`weights`,
    `weights_sha256`), where its file was found (`source`), and for added networks their
    `preprocessing` (a `Preprocessing` dict), `output` and, when not square, `input_width`."""

    kind: str
    name: str
    input_size: int
    weights: str
    weights_sha256: str | None
    layer: str | None
    pooling: str
    source: str | None = None
    preprocess: str = "none"
    preprocessing: dict | None = None
    output: str | None = None
    input_width: int | None = None

    @classmethod
    def from_dict(cls, data: dict) -> BackboneRecipe:
        """Rebuild a recipe from `to_dict` output."""
        return cls(**data)

    @property
    def size(self) -> Size:
        """The input size: `input_size` px square, or (height, width) with an `input_width`."""
        return self.input_size if self.input_width is None else (self.input_size, self.input_width)

    @property
    def resize(self) -> str | None:
        """The resize its preprocessing asks for (`crop:0.875:bicubic`), None: the default."""
        if self.preprocessing is None:
            return None
        from featstore.backbones.preprocessing import Preprocessing

        return Preprocessing.from_dict(self.preprocessing).resize_key

    @functools.cached_property
    def digest(self) -> str:
        """Hex SHA-256 of the recipe, the weights and the exporter versions: the cache key."""
        payload = self.to_dict()
        payload.pop("source")  # where a file was found does not change what it computes
        for key in ("preprocessing", "output", "input_width"):  # added later: absent from older digests
            if payload[key] is None:
                payload.pop(key)
        versions = source_of(self).versions
        if versions is not None:
            payload["versions"] = versions()
        blob = json.dumps(payload, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()

    @property
    def label(self) -> str:
        """Name of the backbone inside feature set names: `vgg16`, `vgg16-160px`, ..."""
        parts = [source_of(self).label(self)]
        if self.layer:
            parts.append(f".{self.layer}")
        if self.pooling != "avg":
            parts.append(f"-{self.pooling}")
        return "".join(parts)

    @property
    def file_stem(self) -> str:
        """File name (no suffix) of the exported ONNX in `store/backbones/`."""
        return f"{self.name}-{size_text(self.size)}-{self.digest[:12]}"


def _name(recipe: BackboneRecipe) -> str:
    return recipe.name


def _none(recipe: BackboneRecipe) -> tuple[None, None]:
    return None, None


@dataclass(frozen=True)
class BackboneSource:
    """Where a backbone comes from.

    - `kind`, `title`: the recipe's `kind` (in every digest: never renamed), a name for users.
    - `claims(value, layout) -> bool`: whether a `--backbone` value is this source's in the
      store `layout` (None: the default store); asked in registration order, the Keras
      applications last.
    - `recipe(options, layout, reporter) -> BackboneRecipe`: checked, weights fetched.
    - `export(recipe, out, reporter) -> ExportedBackbone`: the ONNX file at `out`, checked.
    - `label(recipe)`: its part of feature set names before the layer and pooling.
    - `versions() -> dict`: exporter versions in the digest (None: the file is the model).
    - `keras_model(recipe) -> (keras.Model, preprocess mode)`: for export and training; None
      where Keras cannot build it.
    - `figures(recipe) -> (parameters, GFLOPs per image)`, None where unknown.
    - `hint`: what a value looks like, for the error of a value no source claims.
    - `reuse`: without the exporter, the newest export of an equal recipe may be used.
    """

    kind: str
    title: str
    claims: Callable[[str], bool]
    recipe: Callable[..., BackboneRecipe]
    export: Callable[..., Any]
    label: Callable[[BackboneRecipe], str] = _name
    versions: Callable[[], dict] | None = None
    keras_model: Callable[[BackboneRecipe], tuple] | None = None
    figures: Callable[[BackboneRecipe], tuple] = _none
    reuse: bool = False
    hint: str = ""


#: The modules of the built-in sources, in the order they are asked.
SOURCES: Registry[BackboneSource] = Registry(
    tuple(
        f"featstore.backbones.{m}" for m in ("finetune_run", "onnx_file", "keras_file", "added", "keras_app")
    )
)


def register_source(source: BackboneSource) -> BackboneSource:
    """Add `source` to the registry (replacing one of the same kind) and return it."""
    return SOURCES.add(source.kind, source, source.recipe.__module__)


def available_sources() -> list[str]:
    """The registered sources' kinds, in the order they are asked."""
    return SOURCES.names()


def get_source(kind: str) -> BackboneSource:
    """Return the registered source `kind`; UnknownBackboneError when there is none."""
    source = SOURCES.get(kind)
    if source is None:
        raise UnknownBackboneError(f"no backbone source {kind!r}; sources: {', '.join(SOURCES.names())}")
    return source


def source_of(recipe: BackboneRecipe) -> BackboneSource:
    """The source a recipe was made by."""
    return get_source(recipe.kind)


def find_source(value: str, layout: StoreLayout | None = None) -> BackboneSource:
    """The source that claims the `--backbone` value `value` in the store `layout`;
    UnknownBackboneError when none does."""
    for source in SOURCES.values():
        if source.claims(value, layout):
            return source
    hints = ", ".join(s.hint for s in SOURCES.values() if s.hint)
    raise UnknownBackboneError(
        f"unknown backbone {value!r}; valid names: {', '.join(available_backbones())} (or {hints})"
    )


def resolve_recipe(
    backbone: BackboneOptions, *, layout: StoreLayout | None = None, reporter: Reporter = SILENT
) -> BackboneRecipe:
    """Turn backbone options into a recipe, ImageNet weights fetched on first use; no TensorFlow.

    InvalidOptionError for a bad pooling, input size or layer; UnknownBackboneError for a value no
    source claims, a missing or unreadable file or a size the network cannot take; WeightsError for
    weights that cannot be fetched or are not official; StoreError for an unknown, unfinished or
    changed fine-tune run.
    """
    opts = backbone.check()
    return find_source(opts.backbone, layout).recipe(opts, layout, reporter)


def safe_stem(path: Path) -> str:
    """A file's stem as a backbone name: letters, digits, `_` and `-` (others become `_`)."""
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in path.stem) or "model"
