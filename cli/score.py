"""`featstore score`: a head or a fine-tune run applied to new images, a predictions table out."""

from __future__ import annotations

from typing import Annotated

import typer

from featstore.data.options import DecodeOptions
from featstore.inference.options import InferenceOptions
from featstore.options import JobOptions
from featstore.scoring.options import AUTO_BATCH, ScoreOptions
from featstore_cli.guard import guarded
from featstore_cli.options import (
    BatchSize,
    Country,
    Device,
    Emissions,
    Engine,
    Json,
    Overwrite,
    Quiet,
    RayAddress,
    Runtime,
    Store,
    Threads,
    Workers,
)
from featstore_cli.output import dumps, emissions_lines
from featstore_cli.progress import reporting


@guarded
def score(
    input: Annotated[
        str,
        typer.Option(
            "--input",
            "-i",
            help="A folder (every image below it), a .csv with a path column or .txt list of paths, a glob such as 'photos/**/*.jpg', or one image.",
        ),
    ],
    output: Annotated[
        str,
        typer.Option(
            "--output", "-o", help="The predictions table: .parquet, .csv or .jsonl (the extension chooses)."
        ),
    ],
    head: Annotated[
        str | None,
        typer.Option("--head", help="Head id (see `featstore heads ls`).", show_default=False),
    ] = ScoreOptions.head,
    model: Annotated[
        str | None,
        typer.Option("--model", help="A fine-tune run: finetune:<run-id>.", show_default=False),
    ] = ScoreOptions.model,
    top_k: Annotated[
        int, typer.Option("--top-k", min=1, help="Likeliest classes listed per image (at most all).")
    ] = ScoreOptions.top_k,
    overwrite: Overwrite = ScoreOptions.overwrite,
    force: Annotated[
        bool,
        typer.Option("--force", help="Recompute every image instead of reusing features in the store."),
    ] = ScoreOptions.force,
    reject_below: Annotated[
        float | None,
        typer.Option(
            "--reject-below",
            help="Write unknown as the prediction when the top probability is below P (0 < P < 1).",
            show_default=False,
        ),
    ] = ScoreOptions.reject_below,
    target_precision: Annotated[
        float | None,
        typer.Option(
            "--target-precision",
            help="Choose that threshold on the head's held-out images (its validation part, else out-of-fold "
            "predictions of its training images) so the rows it names reach this precision, e.g. 0.95.",
            show_default=False,
        ),
    ] = ScoreOptions.target_precision,
    batch_size: BatchSize = AUTO_BATCH,
    workers: Workers = DecodeOptions.n_workers,
    threads: Threads = InferenceOptions.n_threads,
    device: Device = InferenceOptions.device,
    runtime: Runtime = InferenceOptions.runtime,
    engine: Engine = InferenceOptions.engine,
    ray_address: RayAddress = InferenceOptions.ray_address,
    emissions: Emissions = JobOptions.emissions,
    country: Country = JobOptions.country,
    store: Store = JobOptions.store,
    json_: Json = False,
    quiet: Quiet = False,
) -> None:
    """Score images with a head (backbone + head) or a fine-tune run; write a predictions table.

    Columns: path, prediction, probability, top_k (CSV: top1_class, top1_probability, ...),
    digest, error. With --reject-below or --target-precision the prediction is `unknown` where
    the head is not sure (the threshold is printed and kept in the run log). A file that cannot be read is a row with its reason. Images whose features
    are in the store for the head's backbone are not run through it again. A killed job resumes
    when run again with the same arguments; the table appears only when complete.

    Example: featstore score --head digits-logistic --input store/datasets/digits --output predictions.csv
    """
    from featstore.scoring.jobs import score as run_score

    options = ScoreOptions(
        input=input, output=output, head=head, model=model, top_k=top_k, overwrite=overwrite, force=force,
        reject_below=reject_below, target_precision=target_precision,
    )  # fmt: skip
    inference = InferenceOptions(device, batch_size, threads, engine, ray_address, runtime)
    decode = DecodeOptions(n_workers=workers)
    job = JobOptions(store=store, emissions=emissions, country=country)
    with reporting("score", quiet) as reporter:
        result = run_score(options, inference=inference, decode=decode, job=job, reporter=reporter)
    if json_:
        typer.echo(dumps(result.to_dict()))
        return
    typer.echo(render_score(result))


def render_score(r) -> str:
    """Human summary of a ScoreResult."""
    lines = [
        f"{r.model}: {r.n_images} images -> {r.output} ({r.format}, top {r.top_k} of {len(r.class_names)} classes)",
        f"  scored {r.n_scored} (cached {r.n_cached}, resumed {r.n_resumed}, computed {r.n_computed}), "
        f"error rows {r.n_errors}, skipped {r.n_skipped}",
    ]
    if r.threshold is not None:
        lines.append(f"  {r.n_unknown} unknown: {r.threshold.describe()}")
    speed = f", {r.images_per_s:.1f} images/s" if r.images_per_s else ""
    lines.append(f"  {r.seconds:.1f} s{speed} on {r.device or 'cache only'} ({r.engine} engine)")
    lines += emissions_lines(r.emissions)
    if r.errors:
        lines.append("error rows:")
        lines += [f"  {s.path}: {s.reason}" for s in r.errors[:20]]
        if len(r.errors) > 20:
            lines.append(f"  ... and {len(r.errors) - 20} more (see the error column)")
    if r.skipped:
        lines.append("skipped:")
        lines += [f"  {s.path}: {s.reason}" for s in r.skipped]
    return "\n".join(lines)
