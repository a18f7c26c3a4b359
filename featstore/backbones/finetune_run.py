"""The fine-tune-run source: `finetune:<run-id>`, the backbone.onnx a finished fine-tune run
exported, checked against the sha256 its run recorded; feature sets `<dataset>@finetune-<run-id>`."""

from __future__ import annotations

from featstore.backbones.export import import_onnx
from featstore.backbones.options import BackboneOptions
from featstore.backbones.recipes import BackboneRecipe, BackboneSource, register_source
from featstore.errors import UnknownBackboneError
from featstore.reporter import Reporter
from featstore.store import run_files
from featstore.store.layout import resolve_store


def _recipe(opts: BackboneOptions, layout, reporter: Reporter) -> BackboneRecipe:
    run_id = run_files.parse_ref(opts.backbone)
    layout = layout if layout is not None else resolve_store()
    path, meta = run_files.run_file(layout, run_id, run_files.BACKBONE_FILE)
    size = int(meta["input_size"])
    ref = f"{run_files.PREFIX}{run_id}"
    if opts.input_size and int(opts.input_size) != size:
        raise UnknownBackboneError(
            f"{ref} takes {size} px images (its network was trained so); leave the input size unset"
        )
    if opts.layer or opts.pooling != "avg":
        checkpoint = run_files.run_dir(layout, run_id) / run_files.CHECKPOINT_FILE
        raise UnknownBackboneError(
            f"{ref} is exported with its own pooled features; --layer and --pooling max do not apply "
            f"(use {checkpoint} as a .keras backbone for those)"
        )
    return BackboneRecipe(
        kind="finetune",
        name=run_files.run_label(run_id),
        input_size=size,
        weights="file",
        weights_sha256=meta["files_sha256"][run_files.BACKBONE_FILE],
        layer=None,
        pooling="avg",
        source=str(path),
    )


register_source(
    BackboneSource(
        "finetune",
        "the backbone of a fine-tune run",
        claims=lambda value, layout: run_files.parse_ref(value) is not None,
        recipe=_recipe,
        export=import_onnx,
        hint="finetune:<run-id>",
    )
)
