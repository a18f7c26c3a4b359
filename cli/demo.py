"""`featstore demo`: the main job, end to end, on the embedded digits dataset."""

from __future__ import annotations

from typing import Annotated

import typer

from featstore.options import JobOptions
from featstore_cli.extract import render_extract
from featstore_cli.guard import guarded
from featstore_cli.options import Country, Emissions, Json, Quiet, Store
from featstore_cli.output import dumps, table
from featstore_cli.progress import reporting

HEAD_COLUMNS = "kind head_id val_accuracy test_accuracy test_macro_f1 fit_seconds energy_kwh".split()


@guarded
def demo(
    weights: Annotated[
        str,
        typer.Option(
            "--weights",
            help="auto (ImageNet, downloaded on first use; random weights when that fails, saying why), "
            "imagenet, none or PATH.",
        ),
    ] = "auto",
    report: Annotated[
        str, typer.Option("--report", help="Where to write the HTML comparison page.")
    ] = "report.html",
    emissions: Emissions = JobOptions.emissions,
    country: Country = JobOptions.country,
    store: Store = JobOptions.store,
    json_: Json = False,
    quiet: Quiet = False,
) -> None:
    """Run the main job on scikit-learn's 1797 handwritten digits: extract MobileNetV2 features
    into the store, fit every head, print the comparison and write it as an HTML page.

    Example: featstore demo
    """
    from featstore.demo import run_demo

    job = JobOptions(store=store, emissions=emissions, country=country)
    with reporting("demo", quiet) as reporter:
        result = run_demo(weights=weights, report=report, job=job, reporter=reporter)
    if json_:
        typer.echo(dumps(result.to_dict()))
        return
    _print_result(result)


def _print_result(result) -> None:
    """Print the demo's summary: weights, images, the extraction, the heads table, the page."""
    typer.echo(f"weights: {result.weights} - {result.weights_reason}")
    typer.echo(f"images: {result.n_images} digits written to {result.data}")
    typer.echo(render_extract(result.extract))
    s = result.split
    typer.echo(
        f"heads on {result.extract.feature_set} ({s['source']} split: {s['n_train']} train, "
        f"{s['n_val']} validation, {s['n_test']} test images), best validation accuracy first:"
    )
    typer.echo(table(result.heads, HEAD_COLUMNS))
    typer.echo(f"report: {result.report} (every run on digits; open it in a browser)")
    typer.echo(f"demo done in {result.seconds:.0f} s; next: featstore report --dataset digits")
