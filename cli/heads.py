"""`featstore fit-head` (a kind, all, sweep, ensemble; few-shot curves with --shots),
`featstore evaluate` and `featstore heads ls|show`.

Option defaults come from the option objects (`HeadConfig`, `SplitOptions`, `SweepOptions`,
`ShotOptions`, `JobOptions`), which the commands build from their flags and pass whole.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Annotated

import typer

from featstore.data.splits import ShotOptions, SplitOptions
from featstore.heads.options import HeadConfig
from featstore.heads.sweep import SweepOptions
from featstore.jobs import JobOptions
from featstore_cli.guard import guarded
from featstore_cli.options import Country, Csv, Emissions, Json, Nl, Quiet, SplitChoice, Store
from featstore_cli.output import dumps, emit, note, pick_format, table

app = typer.Typer(help="List and inspect fitted heads.", no_args_is_help=True)
Features = Annotated[
    list[str],
    typer.Option(
        "--features", "-f", help="Feature set dataset@backbone; repeat to join backbones row by row."
    ),
]
_FitFeatures = Annotated[
    list[str] | None,
    typer.Option(
        "--features",
        "-f",
        help="Feature set dataset@backbone; repeat to join backbones row by row (a sweep fits each "
        "set, and their join when they hold the same images). Not for ensemble.",
        show_default=False,
    ),
]
TABLE = [
    "kind",
    "train_accuracy",
    "val_accuracy",
    "test_accuracy",
    "test_macro_f1",
    "fit_seconds",
    "energy_kwh",
    "head_id",
]


_C = Annotated[
    str | None,
    typer.Option(
        "--C",
        help="Regularisation: a grid for logistic (3-fold CV picks one), one value for svm [default: logistic 0.01,0.1,1,10; svm 10 (rbf), 0.001 (linear)].",
        show_default=False,
    ),
]

_Kernel = Annotated[str, typer.Option("--kernel", help="svm kernel: rbf or linear.")]

_HIDDEN_DEFAULT = ",".join(str(h) for h in HeadConfig.hidden)
_Hidden = Annotated[str, typer.Option("--hidden", help="dense: units per hidden layer, e.g. 512,128.")]

_Dropout = Annotated[float, typer.Option("--dropout", help="dense: dropout after each hidden layer.")]

_Epochs = Annotated[int, typer.Option("--epochs", help="dense: most epochs (early stopping on val).")]

_K = Annotated[int, typer.Option("--k", help="knn: neighbours (cosine distance).")]

_Scale = Annotated[
    str | None,
    typer.Option(
        "--scale",
        help="standard, l2 or none [default: none for knn, standard otherwise].",
        show_default=False,
    ),
]

_TestSize = Annotated[float, typer.Option("--test-size", help="Test fraction of a stratified or hash split.")]

_ValSize = Annotated[
    float,
    typer.Option(
        "--val-size",
        help="Validation fraction (of all rows; of train when carved from a stored train part).",
    ),
]

_Seed = Annotated[int, typer.Option("--seed", help="Seed of the split and of the head.")]

_UseAugmented = Annotated[
    bool, typer.Option("--use-augmented", help="Also train on the augmented views of training images.")
]

_Name = Annotated[
    str | None,
    typer.Option(
        "--name",
        help="Head id to use instead of a generated one (with `all` and `sweep`: NAME-KIND).",
        show_default=False,
    ),
]

_ClassWeight = Annotated[
    str | None,
    typer.Option(
        "--class-weight",
        help="balanced: weigh each class by n_images / (n_classes x its images), for svm, logistic and "
        "dense (all and sweep: the kinds that take weights) [default: none].",
        show_default=False,
    ),
]

_Grid = Annotated[
    str | None,
    typer.Option(
        "--grid",
        help="sweep: a grid file, JSON (or YAML with PyYAML), kind -> settings, e.g. "
        '{"svm": {"kernel": ["rbf"], "C": [1, 10]}} [default: 22 settings of svm, logistic, knn, dense].',
        show_default=False,
    ),
]

_Ensemble = Annotated[
    int,
    typer.Option("--ensemble", help="sweep: also save the soft vote of the K best settings (0: none)."),
]

_Heads = Annotated[
    str | None,
    typer.Option(
        "--heads",
        help="ensemble: the saved heads that vote, A,B,C (same feature sets and split).",
        show_default=False,
    ),
]

_Shots = Annotated[
    str | None,
    typer.Option(
        "--shots",
        help="Few-shot curves instead of saved heads: images per class drawn from train, e.g. 1,2,5,10,20 "
        "(validation cut to as many per class; test unchanged).",
        show_default=False,
    ),
]

_Repeats = Annotated[
    int, typer.Option("--repeats", help="With --shots: draws per value (seeds --seed, --seed+1, ...).")
]

_Jobs = Annotated[
    int, typer.Option("--jobs", min=1, help="Parallel workers (a sweep: settings in parallel).")
]


@guarded
def fit_head(
    kind: Annotated[
        str,
        typer.Argument(
            help="svm, logistic, dense, knn, all (every head, one table), sweep (a grid of settings, "
            "chosen on validation) or ensemble (soft vote of --heads)."
        ),
    ],
    features: _FitFeatures = None,
    C: _C = HeadConfig.C,
    kernel: _Kernel = HeadConfig.kernel,
    hidden: _Hidden = _HIDDEN_DEFAULT,
    dropout: _Dropout = HeadConfig.dropout,
    epochs: _Epochs = HeadConfig.epochs,
    k: _K = HeadConfig.k,
    scale: _Scale = HeadConfig.scale,
    class_weight: _ClassWeight = HeadConfig.class_weight,
    test_size: _TestSize = SplitOptions.test_size,
    val_size: _ValSize = SplitOptions.val_size,
    seed: _Seed = SplitOptions.seed,
    split: SplitChoice = SplitOptions.split,
    use_augmented: _UseAugmented = False,
    grid: _Grid = None,
    ensemble: _Ensemble = SweepOptions.ensemble,
    heads: _Heads = None,
    shots: _Shots = None,
    repeats: _Repeats = ShotOptions.repeats,
    n_jobs: _Jobs = 2,
    name: _Name = None,
    emissions: Emissions = JobOptions.emissions,
    country: Country = JobOptions.country,
    store: Store = JobOptions.store,
    json_: Json = False,
    csv_: Csv = False,
    quiet: Quiet = False,
) -> None:
    """Fit a classical head on cached features, score it on validation and test, and save it.

    `sweep` fits a grid of kinds and settings (--grid), chooses on the validation part only,
    scores the best of each kind once on test and saves them; `ensemble` saves the soft vote
    of --heads; --shots draws k images per class (--repeats times) and prints test accuracy
    against shots instead of saving heads.

    Example: featstore fit-head logistic --features digits@mobilenet_v2-96px-random --name digits-logistic
    """
    from featstore.data.splits import parse_shots
    from featstore.heads.dispatch import fit_heads
    from featstore.heads.options import parse_floats, parse_ints

    fmt = pick_format(json_, False, csv_)
    head = HeadConfig(
        scale=scale,
        C=None if C is None else parse_floats(C),
        kernel=kernel,
        hidden=parse_ints(hidden),
        dropout=dropout,
        epochs=epochs,
        k=k,
        class_weight=None if class_weight in (None, "none") else class_weight,
        random_state=seed,
    )
    objects = (
        head,
        SplitOptions(split=split, test_size=test_size, val_size=val_size, seed=seed),
        SweepOptions(grid=grid, ensemble=ensemble),
        ShotOptions(shots=parse_shots(shots) if shots else (), repeats=repeats),
        JobOptions(store=store, emissions=emissions, country=country),
    )
    with _fits_bar(kind, quiet or fmt != "table") as progress:
        result = fit_heads(
            kind,
            features or [],
            *objects,
            heads=[h for h in (heads or "").split(",") if h.strip()],
            name=name,
            n_jobs=n_jobs,
            log=lambda msg: note(msg, quiet),
            progress=progress,
            use_augmented=use_augmented,
        )
    _print_result(result, kind, fmt)


@contextlib.contextmanager
def _fits_bar(desc: str, quiet: bool) -> Iterator:
    """Yield a `progress(done, total)` callback drawing a bar of fits on stderr (None when quiet)."""
    if quiet:
        yield None
        return
    from tqdm import tqdm

    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=desc, unit="fit", leave=False, dynamic_ncols=True, mininterval=0.5)
        bar.update(done - bar.n)

    try:
        yield update
    finally:
        if bar is not None:
            bar.close()


def _print_result(result, kind: str, fmt: str) -> None:
    """Print what `fit_heads` returned: fitted heads, a sweep's table or few-shot curves."""
    from featstore.heads.fewshot import COLUMNS as SHOT_COLUMNS
    from featstore.heads.fewshot import FewShotResult
    from featstore.heads.sweep import COLUMNS as SWEEP_COLUMNS
    from featstore.heads.sweep import SweepResult

    if isinstance(result, SweepResult):
        rows = result.rows
        if fmt == "table":
            typer.echo(table(rows, [c for c in SWEEP_COLUMNS if c != "error"]))
            n = len(result.heads)
            ids = ", ".join(h.head_id for h in result.heads)
            typer.echo(f"saved {n} head{'s' if n != 1 else ''} ({ids}); table {result.path}")
        else:
            emit(rows if fmt == "csv" else result.to_dict(), fmt, SWEEP_COLUMNS if fmt == "csv" else None)
    elif isinstance(result, FewShotResult):
        if fmt == "table":
            typer.echo(table(result.rows(), SHOT_COLUMNS))
            typer.echo(f"draws and curves: {result.path}")
        else:
            emit(
                result.rows() if fmt == "csv" else result.to_dict(),
                fmt,
                SHOT_COLUMNS if fmt == "csv" else None,
            )
    else:
        results = result if isinstance(result, list) else [result]
        _print_fits(results, several=kind == "all", fmt=fmt)


def _print_fits(results: list, several: bool, fmt: str) -> None:
    """Print fitted heads: one JSON document, CSV rows, or the table and (for one head) where it is."""
    if fmt == "json":
        typer.echo(dumps([r.to_dict() for r in results] if several else results[0].to_dict()))
        return
    if fmt == "csv":
        emit([r.summary() for r in results], fmt, TABLE)
        return
    typer.echo(table([r.summary() for r in results], TABLE))
    if not several:
        typer.echo(f"saved {results[0].path} (model card: card.md)")


@app.command("ls")
@guarded
def ls(store: Store = None, json_: Json = False, nl: Nl = False, csv_: Csv = False) -> None:
    """List fitted heads, newest first.

    Example: featstore heads ls
    """
    from featstore.store.head_files import list_heads
    from featstore.store.layout import resolve_store

    fmt = pick_format(json_, nl, csv_)
    emit(
        list_heads(resolve_store(store)),
        fmt,
        ["head_id", "kind", "features", "val_accuracy", "test_accuracy", "fit_seconds", "status"]
        if fmt == "table"
        else None,
    )


@app.command("show")
@guarded
def show(
    head: Annotated[str, typer.Argument(help="Head id (see `featstore heads ls`).")],
    store: Store = None,
    json_: Json = False,
) -> None:
    """Show a head's model card (or its meta.json with --json).

    Example: featstore heads show digits-logistic
    """
    from featstore.store.head_files import head_dir, read_meta
    from featstore.store.layout import resolve_store

    layout = resolve_store(store)
    meta = read_meta(layout, head)
    if json_:
        typer.echo(dumps(meta))
    else:
        typer.echo((head_dir(layout, head) / "card.md").read_text())


@guarded
def evaluate(
    head: Annotated[str, typer.Option("--head", help="Head id (see `featstore heads ls`).")],
    features: Features,
    store: Store = None,
    json_: Json = False,
) -> None:
    """Score a saved head on every labelled image of other feature sets (same backbone).

    The run is logged, so `featstore report` shows it as an `evaluate` row of the scored set's dataset.

    Example: featstore evaluate --head digits-logistic --features digits@mobilenet_v2-96px-random
    """
    from featstore.heads.evaluation import evaluate as run_eval

    r = run_eval(head, features, job=JobOptions(store=store, emissions=False))
    if json_:
        typer.echo(dumps(r.to_dict()))
        return
    m = r.metrics
    typer.echo(
        f"{r.head_id} on {' + '.join(r.feature_sets)}: {r.n_rows} images"
        + (f" ({r.n_skipped} skipped: unlabelled or a class the head does not know)" if r.n_skipped else "")
    )
    typer.echo(
        f"  accuracy {m['accuracy']:.4f}, balanced accuracy {m['balanced_accuracy']:.4f}, "
        f"macro F1 {m['macro_f1']:.4f}, log loss {m['log_loss']:.4f}"
    )
    typer.echo(
        table(
            [{"class": c, **v} for c, v in m["per_class"].items()],
            ["class", "precision", "recall", "f1", "support"],
        )
    )
    typer.echo(f"saved {r.path}")
