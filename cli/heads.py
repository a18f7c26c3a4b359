"""`featstore fit-head` (a kind, all, sweep, ensemble; few-shot curves with --shots),
`featstore evaluate` and `featstore heads ls|show`."""

from __future__ import annotations

from typing import Annotated

import typer

from featstore.data.options import ShotOptions, SplitOptions
from featstore.heads.kinds.dense import DenseParams
from featstore.heads.kinds.knn import KnnParams
from featstore.heads.kinds.logistic import LogisticParams
from featstore.heads.kinds.svm import DEFAULT_C as SVM_C
from featstore.heads.params import AUTO_CV_BELOW, SelectOptions, SweepOptions
from featstore.options import JobOptions
from featstore_cli.guard import guarded
from featstore_cli.options import Country, Csv, Emissions, Json, Nl, Quiet, SplitChoice, Store
from featstore_cli.output import dumps, emit, pick_format, table
from featstore_cli.progress import reporting

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
LS_COLUMNS = ["head_id", "kind", "features", "val_accuracy", "test_accuracy", "fit_seconds", "status"]
TABLE = (
    "kind train_accuracy val_accuracy cv_accuracy cv_std test_accuracy test_macro_f1 test_ece fit_seconds "
    "energy_kwh head_id"
).split()


def _listed(values) -> str:
    return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


_C = Annotated[
    str | None,
    typer.Option(
        "--C",
        help="Regularisation: a grid for logistic (3-fold CV picks one), one value for svm "
        f"[default: logistic {_listed(LogisticParams.C)}; svm {SVM_C['rbf']:g} (rbf), "
        f"{SVM_C['linear']:g} (linear)].",
        show_default=False,
    ),
]
_Kernel = Annotated[
    str | None, typer.Option("--kernel", help="svm kernel: rbf or linear [default: rbf].", show_default=False)
]
_Hidden = Annotated[
    str | None,
    typer.Option(
        "--hidden",
        help=f"dense: units per hidden layer, e.g. 512,128 [default: {_listed(DenseParams.hidden)}].",
        show_default=False,
    ),
]
_Dropout = Annotated[
    float | None,
    typer.Option(
        "--dropout",
        help=f"dense: dropout after each hidden layer [default: {DenseParams.dropout}].",
        show_default=False,
    ),
]
_Epochs = Annotated[
    int | None,
    typer.Option(
        "--epochs",
        help=f"dense: most epochs, early stopping on val [default: {DenseParams.epochs}].",
        show_default=False,
    ),
]
_K = Annotated[
    int | None,
    typer.Option(
        "--k", help=f"knn: neighbours (cosine distance) [default: {KnnParams.k}].", show_default=False
    ),
]
_Scale = Annotated[
    str | None,
    typer.Option("--scale", help="standard, l2 or none [default: standard].", show_default=False),
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

_Stream = Annotated[
    bool,
    typer.Option(
        "--stream",
        help="Leave the features in the shards and read them a block at a time while fitting (dense and "
        "logistic heads, one feature set): memory stays at a few blocks. Taken without asking when a set is "
        "larger than a head reads into memory.",
    ),
]
_MaxRows = Annotated[
    int | None,
    typer.Option(
        "--max-train-rows",
        help="Read at most this many rows of each feature set: a sample stratified by class, chosen by "
        "content digest (the same images every time), split as usual. For sets too large to hold in memory.",
        show_default=False,
    ),
]

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
    typer.Option(
        "--ensemble",
        help="sweep: also save a greedy ensemble of K picks with replacement among the settings (on "
        "held-out probabilities), chosen over the best single head only beyond noise (0: none).",
    ),
]

_Select = Annotated[
    str,
    typer.Option(
        "--select",
        help="sweep, all: choose on the validation part (val) or by repeated stratified cross-validation "
        "on the training and validation parts (cv), the chosen heads then refitted on both; auto: cv "
        f"when the validation part has fewer than {AUTO_CV_BELOW} images (a single kind: val).",
    ),
]
_CvFolds = Annotated[int, typer.Option("--cv-folds", min=2, help="--select cv: folds.")]
_CvRepeats = Annotated[
    int, typer.Option("--cv-repeats", min=1, help="--select cv: times the folds are drawn.")
]

_Calibrate = Annotated[
    str | None,
    typer.Option(
        "--calibrate",
        help="Map the saved heads' probabilities through a calibration (sigmoid, isotonic or temperature) "
        "fitted on their held-out predictions (validation, or out of fold with --select cv) [default: none].",
        show_default=False,
    ),
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
    C: _C = None,
    kernel: _Kernel = None,
    hidden: _Hidden = None,
    dropout: _Dropout = None,
    epochs: _Epochs = None,
    k: _K = None,
    scale: _Scale = None,
    class_weight: _ClassWeight = None,
    test_size: _TestSize = SplitOptions.test_size,
    val_size: _ValSize = SplitOptions.val_size,
    seed: _Seed = SplitOptions.seed,
    max_train_rows: _MaxRows = SplitOptions.max_rows,
    stream: _Stream = False,
    split: SplitChoice = SplitOptions.split,
    use_augmented: _UseAugmented = False,
    grid: _Grid = None,
    ensemble: _Ensemble = SweepOptions.ensemble,
    select: _Select = SweepOptions.select,
    cv_folds: _CvFolds = SweepOptions.cv_folds,
    cv_repeats: _CvRepeats = SweepOptions.cv_repeats,
    calibrate: _Calibrate = None,
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
    from featstore.data.options import parse_shots
    from featstore.heads.params import parse_floats, parse_ints
    from featstore.heads.registry import make_params
    from featstore.heads.results import SHOT_COLUMNS, SWEEP_COLUMNS

    fmt = pick_format(json_, False, csv_)
    job = JobOptions(store=store, emissions=emissions, country=country)
    flags = {
        "C": None if C is None else parse_floats(C),
        "kernel": kernel,
        "hidden": None if hidden is None else parse_ints(hidden),
        "dropout": dropout,
        "epochs": epochs,
        "k": k,
        "scale": scale,
        "class_weight": None if class_weight == "none" else class_weight,
    }
    given = {key: v for key, v in flags.items() if v is not None} | {"random_state": seed}
    parts = SplitOptions(
        split=split, test_size=test_size, val_size=val_size, seed=seed, max_rows=max_train_rows, stream=stream
    )
    draws = ShotOptions(parse_shots(shots) if shots else (), repeats)
    if not shots and repeats != ShotOptions.repeats:
        _usage("repeats", "counts the draws of each --shots value; give --shots too")
    features = features or []
    swept = SweepOptions(
        grid=grid,
        ensemble=ensemble,
        select=select,
        cv_folds=cv_folds,
        cv_repeats=cv_repeats,
        calibrate=calibrate,
    )
    with reporting(kind, quiet, bar=fmt == "table", unit="fit") as reporter:
        if kind == "ensemble":
            from featstore.heads.ensemble import ensemble as vote

            given_flags = {
                "features": features, "shots": shots, "grid": grid, "ensemble": ensemble, "calibrate": calibrate
            }  # fmt: skip
            _refuse(kind, **given_flags, use_augmented=use_augmented)
            result = vote(_names(heads), name=name, job=job, reporter=reporter)
            return _print_fits([result], several=False, fmt=fmt)
        _refuse(kind, heads=heads)
        if kind != "sweep":
            _refuse(kind, grid=grid, ensemble=ensemble)
        base = make_params("all", given) if kind == "sweep" else ()
        common = {"split": parts, "job": job, "n_jobs": n_jobs, "reporter": reporter}
        if shots:
            from featstore.heads.fewshot import few_shot

            _refuse(f"{kind} --shots", name=name, use_augmented=use_augmented, calibrate=calibrate)
            if kind != "sweep":
                _refuse(f"{kind} --shots", select=None if select == "auto" else select)
            what = swept if kind == "sweep" else make_params(kind, given)
            curves = few_shot(what, features, shots=draws, base=base, **common)
            done = f"draws and curves: {curves.path}"
            return _print_rows(curves.rows(), curves.to_dict(), fmt, SHOT_COLUMNS, done)
        if kind == "sweep":
            from featstore.heads.sweep import sweep

            _refuse(kind, use_augmented=use_augmented)
            r = sweep(features, options=swept, base=base, name=name, **common)
            n, ids = len(r.heads), ", ".join(h.head_id for h in r.heads)
            done = f"saved {n} head{'s' if n != 1 else ''} ({ids}); table {r.path}"
            return _print_rows(r.rows, r.to_dict(), fmt, SWEEP_COLUMNS, done)
        from featstore.heads.fitting import fit_head as fit

        params = make_params(kind, given)
        one = params if kind == "all" else params[0]
        chosen = SelectOptions(select, cv_folds, cv_repeats, calibrate)
        results = fit(one, features, name=name, use_augmented=use_augmented, select=chosen, **common)
    _print_fits(results, several=kind == "all", fmt=fmt)


def _names(heads: str | None) -> list[str]:
    return [h.strip() for h in (heads or "").split(",") if h.strip()]


def _usage(param: str, message: str) -> None:
    """Raise the one-line error of a flag that does not fit the rest of the command line."""
    from featstore.errors import InvalidOptionError

    raise InvalidOptionError(param, message)


def _refuse(kind: str, **given) -> None:
    """Refuse the first flag of `given` that is set: it belongs to another kind of fit-head."""
    for param, value in given.items():
        if value:
            _usage(param, f"is not an option of fit-head {kind}")


def _print_rows(rows: list[dict], whole: dict, fmt: str, columns: list[str], done: str) -> None:
    """Print a sweep's table or few-shot curves: a table and `done`, one JSON document, or CSV.
    The cross-validation columns appear only when the sweep chose so (the val ones then go from
    the table)."""
    cv = any(r.get("cv_accuracy") is not None for r in rows)
    columns = [c for c in columns if cv or c not in ("cv_accuracy", "cv_std")]
    if fmt == "table":
        hidden = {"error", "val_accuracy", "val_macro_f1"} if cv else {"error"}
        typer.echo(table(rows, [c for c in columns if c not in hidden]))
        typer.echo(done)
    elif fmt == "csv":
        emit(rows, fmt, columns)
    else:
        emit(whole, fmt)


def _print_fits(results: list, several: bool, fmt: str) -> None:
    """Print fitted heads: one JSON document, CSV rows, or the table and (for one head) where it is."""
    if fmt == "json":
        typer.echo(dumps([r.to_dict() for r in results] if several else results[0].to_dict()))
        return
    if fmt == "csv":
        emit([r.summary() for r in results], fmt, TABLE)
        return
    rows = [r.summary() for r in results]
    cv = any(r["cv_accuracy"] is not None for r in rows)
    hidden = {"val_accuracy"} if cv else {"cv_accuracy", "cv_std"}
    typer.echo(table(rows, [c for c in TABLE if c not in hidden]))
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
    emit(list_heads(resolve_store(store)), fmt, LS_COLUMNS if fmt == "table" else None)


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


@app.command("trust")
@guarded
def trust(
    head: Annotated[str, typer.Argument(help="Head id (see `featstore heads ls`).")],
    store: Store = None,
) -> None:
    """Convert a head saved by an earlier featstore as a pickle, which you vouch for.

    Loading a pickle runs whatever code it holds, so such heads are refused until trusted once;
    the head is then saved in a format that loads without running code.

    Example: featstore heads trust digits-logistic
    """
    from featstore.store.head_files import trust_head
    from featstore.store.layout import resolve_store

    changed = trust_head(resolve_store(store), head)
    typer.echo(
        f"{head}: converted; it loads without unpickling now" if changed else f"{head}: nothing to convert"
    )


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
