"""`featstore extract`: images -> features in the store."""

from __future__ import annotations

from typing import Annotated

import typer

from featstore_cli.guard import guarded
from featstore_cli.options import (
    BatchSize,
    Country,
    Device,
    Emissions,
    Engine,
    InputSize,
    Json,
    Quiet,
    RayAddress,
    Store,
    Threads,
    Weights,
    Workers,
)
from featstore_cli.output import dumps, emissions_lines, note
from featstore_cli.progress import progress_bar


@guarded
def extract(
    backbone: Annotated[
        str,
        typer.Option(
            "--backbone", "-b", help="Registry name (see `featstore backbones`) or a .onnx/.keras file."
        ),
    ],
    data: Annotated[
        str,
        typer.Option(
            "--data",
            "-d",
            help="Folder of class folders (or train/val/test folders), a CSV manifest path,label[,split], or a .txt list of paths.",
        ),
    ],
    name: Annotated[
        str | None,
        typer.Option(
            "--name", help="Dataset name in the store [default: the folder's name].", show_default=False
        ),
    ] = None,
    weights: Weights = "imagenet",
    input_size: InputSize = None,
    layer: Annotated[
        str | None,
        typer.Option("--layer", help="Take features from this intermediate layer.", show_default=False),
    ] = None,
    pooling: Annotated[str, typer.Option("--pooling", help="avg or max over the spatial grid.")] = "avg",
    resize: Annotated[
        str,
        typer.Option(
            "--resize",
            help="squash (whole image, like Keras load_img), crop (centre) or pad (black borders).",
        ),
    ] = "squash",
    dtype: Annotated[str, typer.Option("--dtype", help="float32 or float16 features on disk.")] = "float32",
    augment: Annotated[
        str | None,
        typer.Option(
            "--augment",
            help="Also store augmented views of each training image (every image when the data has no "
            "train split): a comma list of flip, rotate, zoom, contrast, translate. Needs --copies.",
            show_default=False,
        ),
    ] = None,
    copies: Annotated[
        int, typer.Option("--copies", help="Augmented views per training image (with --augment).")
    ] = 0,
    augment_seed: Annotated[
        int,
        typer.Option("--augment-seed", help="Seed of the augmentations; the same seed gives the same views."),
    ] = 0,
    batch_size: BatchSize = 32,
    workers: Workers = None,
    threads: Threads = None,
    device: Device = "auto",
    engine: Engine = "local",
    ray_address: RayAddress = None,
    force: Annotated[
        bool, typer.Option("--force", help="Recompute every image and replace the feature set.")
    ] = False,
    wait: Annotated[
        bool,
        typer.Option("--wait", help="Wait for another run writing the same feature set instead of exiting."),
    ] = False,
    emissions: Emissions = True,
    country: Country = None,
    store: Store = None,
    json_: Json = False,
    quiet: Quiet = False,
) -> None:
    """Extract backbone features of every image into the store (only new images are computed).

    With --augment and --copies N, N augmented views of each training image are stored too.

    Example: featstore extract --backbone mobilenet_v2 --data photos/ --weights none --input-size 96
    """
    from featstore.extraction import extract as run_extract

    with progress_bar("extract", quiet) as progress:
        result = run_extract(
            data,
            backbone,
            store=store,
            name=name,
            weights=weights,
            input_size=input_size,
            layer=layer,
            pooling=pooling,
            resize=resize,
            dtype=dtype,
            batch_size=batch_size,
            n_workers=workers,
            n_threads=threads,
            device=device,
            force=force,
            wait=wait,
            emissions=emissions,
            country=country,
            augment=augment,
            copies=copies,
            augment_seed=augment_seed,
            engine=engine,
            ray_address=ray_address,
            progress=progress,
            log=lambda msg: note(msg, quiet),
        )
    if json_:
        typer.echo(dumps(result.to_dict()))
        return
    typer.echo(render_extract(result))


def render_extract(r) -> str:
    """Human summary of an ExtractResult."""
    views = f", {r.n_views} augmented views" if r.n_views else ""
    lines = [
        f"{r.feature_set}: {r.n_images} images{views}, {r.n_features} features ({r.dtype}), "
        f"{len(r.class_names)} classes",
        f"  computed {r.n_computed}, reused {r.n_reused}, resumed {r.n_resumed}, "
        f"removed {r.n_removed}, skipped {r.n_skipped}"
        + ("" if r.written else "; nothing changed, file untouched"),
    ]
    speed = f", {r.images_per_s:.1f} images/s on {r.device}" if r.images_per_s else ""
    lines.append(f"  {r.seconds:.1f} s{speed} -> {r.path}")
    lines += emissions_lines(r.emissions)
    if r.empty_classes:
        lines.append(f"  empty class folders: {', '.join(r.empty_classes)}")
    if r.skipped:
        lines.append("skipped:")
        lines += [f"  {s.path}: {s.reason}" for s in r.skipped]
    return "\n".join(lines)
