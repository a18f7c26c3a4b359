"""`featstore fit-head`, `featstore evaluate` and `featstore heads ls|show`.

Option defaults come from the option objects (`HeadConfig`, `SplitOptions`, `JobOptions`),
which the commands build from their flags and pass whole.
"""

from __future__ import annotations

from typing import Annotated

import typer

from featstore.data.splits import SplitOptions
from featstore.heads.options import HeadConfig
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
        help="Head id to use instead of a generated one (with `all`: NAME-KIND).",
        show_default=False,
    ),
]


@guarded
def fit_head(
    kind: Annotated[str, typer.Argument(help="svm, logistic, dense, knn, or all (every head, one table).")],
    features: Features,
    C: _C = HeadConfig.C,
    kernel: _Kernel = HeadConfig.kernel,
    hidden: _Hidden = _HIDDEN_DEFAULT,
    dropout: _Dropout = HeadConfig.dropout,
    epochs: _Epochs = HeadConfig.epochs,
    k: _K = HeadConfig.k,
    scale: _Scale = HeadConfig.scale,
    test_size: _TestSize = SplitOptions.test_size,
    val_size: _ValSize = SplitOptions.val_size,
    seed: _Seed = SplitOptions.seed,
    split: SplitChoice = SplitOptions.split,
    use_augmented: _UseAugmented = False,
    name: _Name = None,
    emissions: Emissions = JobOptions.emissions,
    country: Country = JobOptions.country,
    store: Store = JobOptions.store,
    json_: Json = False,
    quiet: Quiet = False,
) -> None:
    """Fit a classical head on cached features, score it on validation and test, and save it.

    Example: featstore fit-head logistic --features digits@mobilenet_v2-96px-random --name digits-logistic
    """
    from featstore.heads.fitting import fit_head as run_fit
    from featstore.heads.options import parse_floats, parse_ints

    head = HeadConfig(
        scale=scale,
        C=None if C is None else parse_floats(C),
        kernel=kernel,
        hidden=parse_ints(hidden),
        dropout=dropout,
        epochs=epochs,
        k=k,
        random_state=seed,
    )
    results = run_fit(
        kind,
        features,
        head=head,
        split=SplitOptions(split=split, test_size=test_size, val_size=val_size, seed=seed),
        use_augmented=use_augmented,
        name=name,
        job=JobOptions(store=store, emissions=emissions, country=country),
        log=lambda msg: note(msg, quiet),
    )
    _print_fits(results, several=kind == "all", json_=json_)


def _print_fits(results: list, several: bool, json_: bool) -> None:
    """Print fitted heads: one JSON document, or the table and (for one head) where it is."""
    if json_:
        typer.echo(dumps([r.to_dict() for r in results] if several else results[0].to_dict()))
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
