"""`featstore inspect duplicates|leaks|labels|map`: ranked findings as a table (or JSON, CSV), the
full result left in `store/inspections/`."""

from __future__ import annotations

from typing import Annotated

import typer

from featstore.data.options import SplitOptions
from featstore.inspect.options import CrossValOptions, MapOptions, SimilarityOptions
from featstore.options import JobOptions
from featstore_cli.guard import guarded
from featstore_cli.options import Country, Csv, Emissions, Json, Overwrite, Quiet, SplitChoice, Store
from featstore_cli.output import emit, pick_format
from featstore_cli.progress import note, reporting

app = typer.Typer(
    help="Look inside the embeddings: duplicates, train/test leaks, likely label errors, a 2-D map.",
    no_args_is_help=True,
)

#: As `fit-head`'s --test-size and --val-size (the split a head would use).
TestSize = Annotated[float, typer.Option("--test-size", help="Test fraction of a stratified or hash split.")]
ValSize = Annotated[
    float,
    typer.Option(
        "--val-size",
        help="Validation fraction (of all rows; of train when carved from a stored train part).",
    ),
]
Features = Annotated[str, typer.Option("--features", "-f", help="Feature set dataset@backbone.")]
Threshold = Annotated[
    float,
    typer.Option(
        "--threshold",
        help="Cosine similarity of the cached features at which two images count as near duplicates, in (0, 1].",
    ),
]
Head = Annotated[
    str, typer.Option("--head", help="Head kind cross-validated for the predictions: logistic, svm or knn.")
]
Folds = Annotated[
    int, typer.Option("--folds", help="Cross-validation folds (stratified; identical files in one fold).")
]
C = Annotated[
    str,
    typer.Option(
        "--C", help="Regularisation of the logistic or svm head (several: an inner search, as fit-head)."
    ),
]
Workers = Annotated[int, typer.Option("--workers", help="Folds fitted in parallel.")]
CvSeed = Annotated[int, typer.Option("--seed", help="Seed of the folds and of the head.")]


Limit = Annotated[
    int,
    typer.Option(
        "--limit", min=0, help="Print the first N rows (0: all; the result file in the store has all)."
    ),
]
_C_DEFAULT = ",".join(f"{c:g}" for c in CrossValOptions.C)


def _job(store, emissions, country) -> JobOptions:
    return JobOptions(store=store, emissions=emissions, country=country)


def _print(result, fmt: str, limit: int, summary: str, quiet: bool) -> None:
    """Print the ranked findings (table, JSON document or CSV) and, with a table, the summary."""
    if fmt == "json":
        data = result.to_dict()
        data["items"] = result.limited(limit)
        emit(data, "json")
        return
    emit(result.rows(limit), fmt, result.columns)
    if fmt == "table":
        typer.echo(summary)
    for line in result.notes:
        note(f"note: {line}", quiet or fmt == "json")


@app.command("duplicates")
@guarded
def duplicates(
    features: Features,
    threshold: Threshold = SimilarityOptions.threshold,
    limit: Limit = 50,
    emissions: Emissions = JobOptions.emissions,
    country: Country = JobOptions.country,
    store: Store = JobOptions.store,
    json_: Json = False,
    csv_: Csv = False,
    quiet: Quiet = False,
) -> None:
    """Find images stored twice (one content digest at several paths) and near duplicates (cosine
    similarity of the cached features at least --threshold), grouped into clusters, ranked.

    One row per image of a cluster: clusters with the most similar images first, then the
    largest. Exact: byte-identical files; near: a chain of pairs at or above the threshold.

    Example: featstore inspect duplicates --features flowers@mobilenet_v2 --threshold 0.97
    """
    from featstore.inspect.duplicates import find_duplicates

    fmt = pick_format(json_, False, csv_)
    with reporting("duplicates", quiet, bar=fmt == "table") as reporter:
        similarity = SimilarityOptions(threshold=threshold)
        r = find_duplicates(
            features, similarity=similarity, job=_job(store, emissions, country), reporter=reporter
        )
    s = r.summary
    summary = (
        f"{s['n_images']} images: {s['n_exact_groups']} group(s) of identical files, {s['n_near_clusters']} "
        f"near-duplicate cluster(s) ({s['n_near_images']} images) at cosine >= {threshold:g}; saved {r.path}"
    )
    _print(r, fmt, limit, summary, quiet)


@app.command("leaks")
@guarded
def leaks(
    features: Features,
    against: Annotated[
        str | None,
        typer.Option(
            "--against",
            help="A feature set of the same backbone to compare every image with (a hold-out set "
            "against a training set) [default: the parts of FEATURES' own split].",
            show_default=False,
        ),
    ] = None,
    threshold: Threshold = SimilarityOptions.threshold,
    split: SplitChoice = SplitOptions.split,
    test_size: TestSize = SplitOptions.test_size,
    val_size: ValSize = SplitOptions.val_size,
    seed: Annotated[int, typer.Option("--seed", help="Seed of a stratified split.")] = SplitOptions.seed,
    limit: Limit = 50,
    emissions: Emissions = JobOptions.emissions,
    country: Country = JobOptions.country,
    store: Store = JobOptions.store,
    json_: Json = False,
    csv_: Csv = False,
    quiet: Quiet = False,
) -> None:
    """Find held-out images with a near duplicate among training images: validation against train,
    test against train and validation, in the split fit-head would make with the same --split
    options (the stored one when there is one); or every image against --against SET.

    Example: featstore inspect leaks --features flowers@mobilenet_v2
    """
    from featstore.inspect.leaks import find_leaks

    fmt = pick_format(json_, False, csv_)
    with reporting("leaks", quiet, bar=fmt == "table") as reporter:
        r = find_leaks(
            features,
            against,
            similarity=SimilarityOptions(threshold=threshold),
            split=SplitOptions(split=split, test_size=test_size, val_size=val_size, seed=seed),
            job=_job(store, emissions, country),
            reporter=reporter,
        )
    parts = "; ".join(
        f"{p['part']}: {p['n_leaked']} of {p['n_images']} images"
        + (f" ({100 * p['fraction']:.1f} %)" if p["n_images"] else "")
        for p in r.summary["parts"]
    )
    where = f"in {against}" if against else "in the parts they are compared with"
    summary = f"near duplicates {where} at cosine >= {threshold:g}: {parts}; saved {r.path}"
    _print(r, fmt, limit, summary, quiet)


@app.command("labels")
@guarded
def labels(
    features: Features,
    head: Head = CrossValOptions.head,
    folds: Folds = CrossValOptions.folds,
    C: C = _C_DEFAULT,
    seed: CvSeed = CrossValOptions.seed,
    workers: Workers = CrossValOptions.n_jobs,
    limit: Limit = 50,
    emissions: Emissions = JobOptions.emissions,
    country: Country = JobOptions.country,
    store: Store = JobOptions.store,
    json_: Json = False,
    csv_: Csv = False,
    quiet: Quiet = False,
) -> None:
    """Rank the images whose label is likely wrong: each image is predicted by a head fitted on the
    other folds (cross-validated probabilities), and cleanlab's find_label_issues picks the
    labels that disagree, lowest probability of the given label first. Needs cleanlab
    (pip install "featstore[inspect]").

    Example: featstore inspect labels --features flowers@mobilenet_v2 --limit 20
    """
    from featstore.heads.params import parse_floats
    from featstore.inspect.labels import find_label_issues

    fmt = pick_format(json_, False, csv_)
    crossval = CrossValOptions(head=head, folds=folds, C=parse_floats(C), seed=seed, n_jobs=workers)
    r = find_label_issues(features, crossval=crossval, job=_job(store, emissions, country))
    s = r.summary
    summary = (
        f"{s['n_issues']} likely label error(s) among {s['n_labelled']} labelled images "
        f"({s['head']}, {s['folds']}-fold cross-validated accuracy {s['cv_accuracy']:.4f}); saved {r.path}"
    )
    _print(r, fmt, limit, summary, quiet)


@app.command("map")
@guarded
def map_(
    features: Features,
    output: Annotated[
        str | None,
        typer.Option(
            "--output", "-o", help="Also write the PNG here (the store keeps a copy).", show_default=False
        ),
    ] = None,
    method: Annotated[
        str,
        typer.Option(
            "--method",
            help="auto (UMAP when umap-learn is installed, else t-SNE; PCA above 5,000 images), umap, tsne or pca.",
        ),
    ] = MapOptions.method,
    perplexity: Annotated[
        float, typer.Option("--perplexity", help="t-SNE perplexity.")
    ] = MapOptions.perplexity,
    marks: Annotated[
        bool,
        typer.Option("--marks/--no-marks", help="Mark the images a cross-validated head misclassifies."),
    ] = MapOptions.mark_misclassified,
    head: Head = CrossValOptions.head,
    folds: Folds = CrossValOptions.folds,
    C: C = _C_DEFAULT,
    seed: Annotated[
        int, typer.Option("--seed", help="Seed of the layout, the folds and the head.")
    ] = MapOptions.seed,
    workers: Workers = CrossValOptions.n_jobs,
    overwrite: Overwrite = False,
    emissions: Emissions = JobOptions.emissions,
    country: Country = JobOptions.country,
    store: Store = JobOptions.store,
    json_: Json = False,
    csv_: Csv = False,
    quiet: Quiet = False,
) -> None:
    """Draw the images in 2-D, coloured by class, the images a cross-validated head misclassifies
    ringed in black; a set without labels gets one colour. Prints images and misclassified per
    class; the PNG and a CSV of the coordinates stay in the store.

    Example: featstore inspect map --features flowers@mobilenet_v2 --output map.png
    """
    from featstore.heads.params import parse_floats
    from featstore.inspect.maps import draw_map, method_name

    fmt = pick_format(json_, False, csv_)
    r = draw_map(
        features,
        output,
        map_options=MapOptions(method=method, perplexity=perplexity, seed=seed, mark_misclassified=marks),
        crossval=CrossValOptions(head=head, folds=folds, C=parse_floats(C), seed=seed, n_jobs=workers),
        job=_job(store, emissions, country),
        overwrite=overwrite,
    )
    s = r.summary
    wrong = f", {s['n_misclassified']} misclassified" if s["n_misclassified"] is not None else ""
    summary = (
        f"{method_name(s['method'])} map of {s['n_images']} images{wrong}; wrote {r.output or r.picture}"
    )
    _print(r, fmt, 0, summary, quiet)
