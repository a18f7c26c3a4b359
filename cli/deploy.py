"""`featstore export`: a head and its backbone as one ONNX file."""

from __future__ import annotations

from typing import Annotated

import typer

from featstore.data.options import hw
from featstore_cli.guard import guarded
from featstore_cli.options import Json, Overwrite, Store
from featstore_cli.output import dumps


@guarded
def export(
    head: Annotated[str, typer.Option("--head", help="Head id (see `featstore heads ls`).")],
    output: Annotated[str, typer.Option("--output", "-o", help="The .onnx file to write.")],
    overwrite: Overwrite = False,
    reject_below: Annotated[
        float | None,
        typer.Option(
            "--reject-below",
            help="Also output label (N,) int64: the class index, -1 (unknown) where the top probability is "
            "below P.",
            show_default=False,
        ),
    ] = None,
    store: Store = None,
    json_: Json = False,
) -> None:
    """Write a head and its backbone as one ONNX file: uint8 RGB pixels in, class probabilities out.

    Input `pixels` (N, S, S, 3) uint8, resized as the head's features were; output
    `probabilities` (N, n_classes) float32; class names, input size and resize policy in the
    metadata. Runs under plain onnxruntime; checked against `featstore score` before writing.
    With --reject-below P a second output `label` gives the class index, -1 where unsure.

    Example: featstore export --head digits-logistic --output digits.onnx
    """
    from featstore.scoring.deploy import export_head

    r = export_head(head, output, store=store, overwrite=overwrite, reject_below=reject_below)
    if json_:
        typer.echo(dumps(r.to_dict()))
        return
    typer.echo(
        f"{r.head_id} -> {r.path} ({r.size_mb:.1f} MB, opset {r.opset})\n"
        f"  input pixels (N, {', '.join(map(str, hw(r.input_size)))}, 3) uint8, resize {r.resize}; "
        f"output probabilities (N, {len(r.class_names)}) float32\n"
        f"  backbone {' + '.join(r.backbones)}; largest difference from featstore score {r.max_abs_diff:.1e}"
    )
