"""The ONNX-file source: a user's `.onnx` backbone that takes NHWC uint8 or float RGB pixels and
returns one feature vector per image, copied into the store as it is."""

from __future__ import annotations

from pathlib import Path

from featstore.backbones.applications import check_input_size
from featstore.backbones.export import import_onnx
from featstore.backbones.options import BackboneOptions
from featstore.backbones.recipes import BackboneRecipe, BackboneSource, register_source, safe_stem
from featstore.errors import InvalidOptionError, UnknownBackboneError
from featstore.files import sha256_file
from featstore.reporter import Reporter


def file_recipe(kind: str, path: Path, opts: BackboneOptions, size: int | None) -> BackboneRecipe:
    """The recipe of a user's model file of source `kind` with input `size` (None: not fixed);
    InvalidOptionError when a file without a fixed size gets none, UnknownBackboneError for a
    size no run can take here."""
    size = opts.input_size or size
    if size is None:
        raise InvalidOptionError("input_size", f"{path} has no fixed input size; give one")
    check_input_size(path.name, int(size))
    return BackboneRecipe(
        kind=kind,
        name=safe_stem(path),
        input_size=int(size),
        weights="file",
        weights_sha256=sha256_file(path),
        layer=opts.layer,
        pooling=opts.pooling,
        source=str(path.absolute()),
    )


def existing(value: str) -> Path:
    """The model file `value` names. Raises UnknownBackboneError when it does not exist."""
    path = Path(value).expanduser()
    if not path.is_file():
        raise UnknownBackboneError(f"backbone file {path} does not exist")
    return path


def _recipe(opts: BackboneOptions, layout, reporter: Reporter) -> BackboneRecipe:
    path = existing(opts.backbone)
    if opts.layer:
        raise InvalidOptionError("layer", "works with registry and .keras backbones, not .onnx")
    return file_recipe("onnx", path, opts, _input_size(path))


def _input_size(path: Path) -> int | None:
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
            f"{path} must take NHWC RGB pixels (batch, height, width, 3) with its preprocessing inside; its "
            f"input has shape {[d.dim_value or d.dim_param for d in dims]}: add it with `featstore backbones "
            "add NAME --from FILE --config CONFIG` (or --preprocess) instead"
        )
    h, w = dims[1].dim_value, dims[2].dim_value
    if h and w and h != w:
        raise UnknownBackboneError(f"{path} takes {h}x{w} images; only square inputs are supported")
    return h or None


register_source(
    BackboneSource(
        "onnx",
        "an ONNX file",
        claims=lambda value, layout: Path(value).suffix.lower() == ".onnx",
        recipe=_recipe,
        export=import_onnx,
        hint="a .onnx file",
    )
)
