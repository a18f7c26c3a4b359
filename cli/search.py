"""`featstore search`: the stored images most like query images."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from featstore.inspect.options import SEARCH_METHODS, SearchOptions
from featstore_cli.guard import guarded
from featstore_cli.options import Csv, Device, Json, Nl, Runtime, Store, Threads
from featstore_cli.output import dumps, emit, pick_format

METHOD_HELP = (
    f'{", ".join(SEARCH_METHODS)}: exact compares every row; faiss (pip install "featstore[search]") '
    "searches an index; auto uses FAISS for large sets when it is installed."
)


@guarded
def search(
    features: Annotated[str, typer.Option("--features", "-f", help="The feature set to search.")],
    image: Annotated[
        list[Path],
        typer.Option("--image", "-i", help="A query image (repeat for several).", show_default=False),
    ],
    k: Annotated[int, typer.Option("--k", min=1, help="Matches per query.")] = SearchOptions.k,
    method: Annotated[
        str,
        typer.Option(
            "--method",
            help=METHOD_HELP,
        ),
    ] = SearchOptions.method,
    html: Annotated[
        Path | None,
        typer.Option(
            "--html",
            help="Also write the queries and matches as thumbnails to this page.",
            show_default=False,
        ),
    ] = None,
    device: Device = "auto",
    runtime: Runtime = "auto",
    threads: Threads = None,
    store: Store = None,
    json_: Json = False,
    nl: Nl = False,
    csv_: Csv = False,
) -> None:
    """Find the stored images most similar to query images: the queries run through the set's
    backbone (or take their stored features when the set holds the same file), the k stored
    images with the highest cosine come back with path, label and similarity.

    Example: featstore search --features photos@mobilenet_v2 --image query.jpg --k 5 --html matches.html
    """
    from featstore.inference.options import InferenceOptions
    from featstore.inspect.search import COLUMNS
    from featstore.inspect.search import search as run_search
    from featstore_cli.progress import reporting

    fmt = pick_format(json_, nl, csv_)
    inference = InferenceOptions(device=device, runtime=runtime, n_threads=threads)
    with reporting("search", quiet=fmt != "table", bar=False) as reporter:
        result = run_search(
            features, image, SearchOptions(k, method), inference=inference, store=store, reporter=reporter
        )
    if html is not None:
        from featstore.inspect.search_page import render_search

        html.write_text(render_search(result))
    if fmt == "json":
        typer.echo(dumps(result.to_dict()))
    else:
        emit(result.rows(), fmt, COLUMNS if fmt == "table" else None)
