"""`featstore fit-head KIND` and `fit-head all`: heads fitted by the fit engine, scored and saved,
each one `fit-head` run with the energy of its fit."""

from __future__ import annotations

import time
from collections.abc import Sequence

from featstore.data.options import SplitOptions
from featstore.data.splits import make_split
from featstore.errors import HeadError, InvalidOptionError
from featstore.files import write_atomic, write_json
from featstore.heads.params import HeadParams, SelectOptions
from featstore.heads.registry import kind_of
from featstore.heads.results import FitResult
from featstore.heads.saved import Fitted, save_fitted
from featstore.heads.training_data import (
    beyond_budget,
    close_features,
    load_training_data,
    open_stored,
    training_rows,
)
from featstore.heads.trials import Prepared, Setting, fit_setting
from featstore.jobs import run_job
from featstore.options import JobOptions
from featstore.reporter import SILENT, Reporter
from featstore.store.head_files import head_dir
from featstore.store.layout import StoreLayout, resolve_store


def fit_head(
    params: HeadParams | Sequence[HeadParams],
    features: Sequence[str],
    *,
    split: SplitOptions = SplitOptions(),
    job: JobOptions = JobOptions(),
    name: str | None = None,
    use_augmented: bool = False,
    select: SelectOptions = SelectOptions(),
    n_jobs: int = 2,
    reporter: Reporter = SILENT,
) -> list[FitResult]:
    """Fit one head per parameters object on feature sets `features`, score and save each.

    Parameters
    ----------
    params
        The parameters of one kind (`SvmParams(C=1.0)`, ...; their class is the kind), or
        several (`fit-head all`; see `featstore.make_params`).
    features
        Feature sets `dataset@backbone`, joined row by row through the content digests.
    split, job, name
        The split (recorded in the head's meta), store and energy, the head id (several
        heads: NAME-KIND).
    use_augmented, n_jobs, reporter
        Also train on augmented views; scikit-learn's workers; a note per re-mapped split.
    select
        How the heads are scored before test: on the validation part (val), or by repeated
        stratified cross-validation on the training and validation parts (cv: each head then
        refitted on both, its meta's `cv` holds the mean and standard deviation); auto: cv for
        several heads when the validation part is small, val for one head.

    Returns
    -------
    list[FitResult]
        One per head, best validation (or cross-validated) accuracy first.

    Raises
    ------
    HeadError
        A taken `name`, or too few images for the kind.
    InvalidOptionError
        A parameter out of range, or `use_augmented` without augmented views.
    DatasetError, UnknownFeatureSetError
        A missing feature set, one class, too few images, NaN features, an unusable split.
    """
    several = not isinstance(params, HeadParams)
    settings = [Setting(p.check()) for p in (params if several else [params])]
    for s in settings:
        kind_of(s.params)
    layout = resolve_store(job.store)
    ids = _head_ids(layout, name, [s.kind for s in settings], several)
    select = select.check()
    if _streams(settings, layout, list(features), split, use_augmented, select):
        return [_fit_streamed(settings[0], ids[0], layout, features[0], split, job, select, reporter)]
    data = _load(layout, list(features), split.max_rows, reporter)
    parts = make_split(data.labels, data.split, data.class_names, split, digests=data.digests)
    if parts.note:
        reporter.log(parts.note)
    how = _how(select, len(parts.val), several, reporter)
    cv: dict = {}
    held: dict = {}
    if how == "cv":
        if use_augmented:
            raise InvalidOptionError(
                "use_augmented", "is not taken with --select cv: the folds hold plain images"
            )
        parts, cv, held = _cross_validated(settings, data, parts, select, n_jobs, reporter)
    X, y, n_aug = training_rows(data, parts, use_augmented)
    prep = Prepared(X, y, data.X[parts.val], data.labels[parts.val], len(data.class_names))
    results = []
    for setting, head_id in zip(settings, ids, strict=True):
        with run_job("fit-head", job, lazy=True, reporter=reporter) as run:
            run.begin()
            trial = fit_setting(setting, prep, "+".join(data.feature_sets), n_jobs, strict=True)
            em = run.stop_measuring()  # fit-head counts the fit, not scoring and saving
            fitted = Fitted(
                trial.estimator, setting.params.to_dict(), data, parts, trial.fit_seconds, em,
                n_aug, use_augmented, extra={"cv": cv[setting.label]} if cv else {},
            )  # fmt: skip
            if select.calibrate:
                probs, y_held, where = held.get(setting.label) or (
                    trial.held,
                    prep.y_val,
                    "validation images",
                )
                fitted = _calibrated(fitted, select.calibrate, probs, y_held, where)
            result, run.record = save_fitted(run.layout, run.run_id, head_id, fitted)
        result.cv = cv.get(setting.label)
        results.append(result)
    results.sort(key=_rank)
    if several:
        _write_comparison(layout, results)
    return results


def _load(layout: StoreLayout, features: list[str], max_rows: int | None, reporter: Reporter):
    """The training data, a line said when it is a sample."""
    data = load_training_data(layout, features, max_rows=max_rows)
    if max_rows is not None:
        gb = data.X.nbytes / 1e9
        reporter.log(
            f"fitting on a stratified sample of {len(data.labels):,} images ({gb:.2f} GB of features)"
        )
    return data


def _how(select: SelectOptions, n_val: int, several: bool, reporter: Reporter) -> str:
    """How the heads are scored before test: "val" or "cv" (auto: said for several heads)."""
    if several and select.select == "auto":
        reporter.log(select.why(n_val))
    return select.resolve(n_val) if several or select.select != "auto" else "val"


def _streams(settings, layout, features: list[str], split: SplitOptions, use_augmented: bool, select) -> bool:
    """Whether the fit leaves the features in the shards and reads them a block at a time: when
    asked (InvalidOptionError for what streaming does not do), or for one dense or logistic
    head on one set larger than a head reads into memory, without --max-train-rows."""
    from featstore.heads.streaming import KINDS, check_streamable

    if split.stream:
        if len(settings) != 1:
            raise InvalidOptionError("stream", "fits one head at a time; name one kind")
        check_streamable(settings[0].kind, len(features), use_augmented, select.select)
        return True
    if (
        len(settings) != 1
        or settings[0].kind not in KINDS
        or split.max_rows is not None
        or select.select == "cv"
    ):
        return False
    return len(features) == 1 and not use_augmented and beyond_budget(layout, features)


def _fit_streamed(
    setting, head_id, layout: StoreLayout, name: str, split, job, select, reporter
) -> FitResult:
    """Fit, score and save one dense or logistic head on feature set `name` with its features
    read from the shards a block at a time (`heads.streaming`); the peak memory is said and
    kept in the head's meta (`streamed`)."""
    from featstore.heads.metrics import probabilities_of
    from featstore.heads.streaming import BLOCK_ROWS, fit_streamed, peak_memory_gb

    data = open_stored(layout, name)
    try:
        parts = make_split(data.labels, data.split, data.class_names, split, digests=data.digests)
        if parts.note:
            reporter.log(parts.note)
        gb = len(parts.train) * data.X.shape[1] * 4 / 1e9
        reporter.log(
            f"streaming {len(parts.train):,} training rows ({gb:.2f} GB of features) from the shards of "
            f"{name}, {BLOCK_ROWS:,} rows at a time"
        )
        with run_job("fit-head", job, lazy=True, reporter=reporter) as run:
            run.begin()
            t0 = time.perf_counter()
            estimator = fit_streamed(setting.params, data.X, data.labels, parts.train, parts.val)
            fit_s = round(time.perf_counter() - t0, 3)
            em = run.stop_measuring()
            streamed = {
                "train_rows": len(parts.train),
                "block_rows": BLOCK_ROWS,
                "peak_memory_gb": peak_memory_gb(),
            }
            fitted = Fitted(
                estimator, setting.params.to_dict(), data, parts, fit_s, em, extra={"streamed": streamed}
            )
            if select.calibrate:
                held = probabilities_of(estimator, data.X, parts.val, len(data.class_names))[None]
                fitted = _calibrated(
                    fitted, select.calibrate, held, data.labels[parts.val], "validation images"
                )
            result, run.record = save_fitted(run.layout, run.run_id, head_id, fitted)
        reporter.log(
            f"peak memory {peak_memory_gb():.2f} GB (the features: {gb:.2f} GB, read {BLOCK_ROWS:,} rows at a time)"
        )
        return result
    finally:
        close_features(data)


def _rank(result: FitResult) -> tuple:
    """Best first: cross-validated accuracy, else validation, else test accuracy."""
    if result.cv:
        return (-result.cv["accuracy"], result.cv["log_loss"])
    return (-(result.metrics.get("val", result.metrics.get("test", {})).get("accuracy") or 0), 0.0)


def _cross_validated(settings, data, parts, select: SelectOptions, n_jobs: int, reporter):
    """Cross-validate `settings` on the training and validation rows of `parts`; return the split
    with validation folded into training and {setting label: {accuracy, std, log_loss, folds,
    repeats}} and {setting label: (out-of-fold probabilities, labels, where)}. HeadError for a
    setting that fails on a fold."""
    from featstore.heads.crossval import Folds, cross_validate

    folds = Folds.of(data.labels, parts, select.cv_folds, select.cv_repeats, parts.seed or 0)
    source = "+".join(data.feature_sets)
    trials = cross_validate(settings, data.X, data.labels, len(data.class_names), folds, source, n_jobs)
    out, held = {}, {}
    for trial in trials:
        if not trial.ok:
            raise HeadError(f"{trial.setting.label}: {trial.error}")
        held[trial.setting.label] = (trial.held, data.labels[folds.pool], folds.held_out)
        out[trial.setting.label] = {
            "accuracy": trial.cv_accuracy, "std": trial.cv_std, "log_loss": trial.cv_log_loss,
            "folds": folds.folds, "repeats": folds.repeats,
        }  # fmt: skip
    reporter.log(
        f"scored by {folds.folds}-fold cross-validation repeated {folds.repeats} times on the training and "
        "validation images; each head was then fitted on all of them and scored once on test"
    )
    return folds.folded_split(parts), out, held


def _calibrated(fitted: Fitted, method: str, held, y, where: str) -> Fitted:
    """`fitted` calibrated on held-out probabilities; HeadError when there are none."""
    from featstore.heads.calibration import calibrated_fit

    if held is None or not len(y):
        raise HeadError("calibration needs held-out images: a validation part, or --select cv")
    return calibrated_fit(fitted, method, held, y, where)


def _head_ids(layout: StoreLayout, name: str | None, kinds: list[str], several: bool) -> list:
    """The head id of each kind: `name` (NAME-KIND for several) or None; HeadError when taken."""
    if not name:
        return [None] * len(kinds)
    ids = [f"{name}-{k}" if several else name for k in kinds]
    for head_id in ids:
        if head_dir(layout, head_id).exists():
            raise HeadError(f"head {head_id} exists already; choose another --name or remove it")
    return ids


def _write_comparison(layout: StoreLayout, results: list[FitResult]) -> None:
    """`heads/comparisons/<sets>-<time>.json` and `.md`: one row per head of `fit-head all`."""
    folder = layout.heads / "comparisons"
    stem = f"{'+'.join(results[0].feature_sets).replace('@', '-')}-{time.strftime('%Y%m%d-%H%M%S')}"
    rows = [r.summary() for r in results]
    lines = [
        "| head | val accuracy | cv accuracy | test accuracy | test macro F1 | test ECE | fit s | head id |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cv = "-" if r["cv_accuracy"] is None else f"{_pct(r['cv_accuracy'])} ± {100 * r['cv_std']:.1f}"
        lines.append(
            f"| {r['kind']} | {_pct(r['val_accuracy'])} | {cv} | {_pct(r['test_accuracy'])} | "
            f"{r['test_macro_f1']:.3f} | {_num(r['test_ece'])} | {r['fit_seconds']} | {r['head_id']} |"
        )
    write_json(folder / f"{stem}.json", rows, indent=2)
    write_atomic(folder / f"{stem}.md", ("\n".join(lines) + "\n").encode())


def _num(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"
