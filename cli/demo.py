"""`featstore demo`: the main job on the embedded digits dataset."""

from __future__ import annotations

from typing import Annotated

import typer

from featstore_cli.extract import render_extract
from featstore_cli.guard import guarded
from featstore_cli.options import Country, Emissions, Json, Quiet, Store
from featstore_cli.output import dumps, note, table
from featstore_cli.progress import progress_bar


@guarded
def demo(
    weights: Annotated[
        str, typer.Option("--weights", help="auto (ImageNet when cached, else none), imagenet, none or PATH.")
    ] = "auto",
    emissions: Emissions = True,
    country: Country = None,
    store: Store = None,
    json_: Json = False,
    quiet: Quiet = False,
) -> None:
    """Extract MobileNetV2 features of scikit-learn's 1797 handwritten digits into the store.

    Example: featstore demo
    """
    from featstore.demo import run_demo

    with progress_bar("demo", quiet) as progress:
        result = run_demo(store, weights, emissions, country, progress, lambda m: note(m, quiet))
    if json_:
        typer.echo(dumps(result.to_dict()))
        return
    typer.echo(f"weights: {result.weights} - {result.weights_reason}")
    typer.echo(f"images: {result.n_images} digits written to {result.data}")
    typer.echo(render_extract(result.extract))
    info = result.feature_set
    typer.echo("stored, per class:")
    typer.echo(table([{"class": k, "images": v} for k, v in info["per_class"].items()]))
    typer.echo(f"next: featstore fit-head all --features {result.extract.feature_set}")
