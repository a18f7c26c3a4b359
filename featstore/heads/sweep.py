"""`featstore fit-head sweep`: a grid of settings fitted in one run, chosen on the validation part
only; the best of each kind (and the soft vote of the K best) saved as ordinary heads."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from featstore.data.options import SplitOptions
from featstore.emissions import Emissions
from featstore.errors import HeadError, InvalidOptionError
from featstore.files import write_json
from featstore.heads.ensemble import KIND as ENSEMBLE
from featstore.heads.ensemble import Member, vote
from featstore.heads.grid import expand_grid
from featstore.heads.params import HeadParams, SweepOptions
from featstore.heads.results import FitResult, SweepResult
from featstore.heads.saved import Fitted, save_fitted
from featstore.heads.training_data import Source, load_sources
from featstore.heads.trials import Prepared, Setting, Trial, choose, ranked, run_trials
from featstore.jobs import run_job
from featstore.options import JobOptions
from featstore.reporter import SILENT, Reporter
from featstore.store.head_files import head_dir
from featstore.store.layout import StoreLayout
from featstore.store.runlog import SweepRecord


def _head_ids(layout: StoreLayout, name: str | None, kinds: list[str], n_groups: int) -> dict:
    """{(group, kind): head id} of a named sweep (NAME-KIND, NAME-KIND-<group> for several sets of
    images); empty without a name. HeadError when one is taken."""
    if not name:
        return {}
    ids = {
        (g, k): f"{name}-{k}" + (f"-{g + 1}" if n_groups > 1 else "") for g in range(n_groups) for k in kinds
    }
    for head_id in ids.values():
        if head_dir(layout, head_id).exists():
            raise HeadError(f"head {head_id} exists already; choose another --name or remove it")
    return ids


def _chosen_label(kind: str, overall: bool) -> str:
    return "best" if overall else f"best {kind}"


@dataclass
class _Saved:
    """A head a sweep saved: its trial (None for an ensemble), why it was chosen, its setting's
    label and its FitResult."""

    trial: Trial | None
    chosen: str
    setting: str
    result: FitResult

    def row(self) -> dict:
        """The head's row of the sweep's table, its figures from its result."""
        r = self.result
        val, test = r.metrics.get("val") or {}, r.metrics.get("test") or {}
        return {
            "rank": None, "kind": r.kind, "setting": self.setting, "features": "+".join(r.feature_sets),
            "val_accuracy": val.get("accuracy"), "val_macro_f1": val.get("macro_f1"),
            "cv_accuracy": None, "cv_std": None,
            "test_accuracy": test.get("accuracy"), "test_macro_f1": test.get("macro_f1"),
            "fit_seconds": r.fit_seconds, "chosen": self.chosen, "head_id": r.head_id, "error": None,
        }  # fmt: skip


@dataclass
class _Run:
    """What saving a sweep's heads shares."""

    layout: StoreLayout
    run_id: str
    n_settings: int
    em: Emissions
    ids: dict
    ensemble: int


def _save_group(run: _Run, group: int, trials: list[Trial], sources: dict[str, Source]) -> list[_Saved]:
    """Save the best trial of each kind of one set of images (and the ensemble), best overall first."""
    best = choose(trials)
    if "" not in best:
        raise HeadError(
            "no setting of the grid could be fitted: " + "; ".join(sorted({t.error or "" for t in trials}))
        )
    overall = best.pop("")
    saved = []
    for kind, trial in [
        (overall.setting.kind, overall),
        *((k, t) for k, t in best.items() if t is not overall),
    ]:
        chosen = _chosen_label(kind, trial is overall)
        extra = {
            "sweep": {
                "run_id": run.run_id,
                "setting": trial.setting.label,
                "chosen": chosen,
                "n_settings": run.n_settings,
            }
        }
        if trial.cv_accuracy is not None:
            extra["sweep"]["cv"] = {
                "accuracy": trial.cv_accuracy,
                "std": trial.cv_std,
                "log_loss": trial.cv_log_loss,
            }
        source = sources[trial.source]
        fitted = Fitted(
            trial.estimator, trial.setting.params.to_dict(), source.data, source.split,
            trial.fit_seconds, run.em, extra=extra,
        )  # fmt: skip
        result, _ = save_fitted(run.layout, run.run_id, run.ids.get((group, kind)), fitted)
        saved.append(_Saved(trial, chosen, trial.setting.label, result))
    if run.ensemble:
        saved.append(_save_sweep_ensemble(run, group, overall, trials, sources))
    return saved


def _save_sweep_ensemble(run: _Run, group: int, overall: Trial, trials: list[Trial], sources) -> _Saved:
    """The soft vote of the K best settings on the best setting's features, saved."""
    pool = [t for t in ranked(trials) if t.source == overall.source and t.estimator is not None]
    if len(pool) < run.ensemble:
        raise InvalidOptionError(
            "ensemble",
            f"asks for the {run.ensemble} best settings, but {overall.source} has {len(pool)} fitted",
        )
    members = [
        Member(t.estimator, t.setting.kind, t.setting.label, t.setting.params.to_dict())
        for t in pool[: run.ensemble]
    ]
    source = sources[overall.source]
    chosen = f"ensemble of the {run.ensemble} best"
    extra = {
        "sweep": {"run_id": run.run_id, "setting": chosen, "chosen": chosen, "n_settings": run.n_settings}
    }
    fitted = vote(members, source.data, source.split, run.em, extra)
    result, _ = save_fitted(run.layout, run.run_id, run.ids.get((group, ENSEMBLE)), fitted)
    return _Saved(None, chosen, "soft vote of " + ", ".join(m.name for m in members), result)


def _rows(trials: list[Trial], saved: list[_Saved]) -> list[dict]:
    """The table: every trial ranked (saved heads with their test figures), and the ensembles."""
    by_trial = {id(s.trial): (s.chosen, s.result) for s in saved if s.trial is not None}
    rows = []
    for rank, trial in enumerate(ranked(trials), 1):
        chosen, result = by_trial.get(id(trial), (None, None))
        test = (result.metrics.get("test") or {}) if result else {}
        rows.append(
            {
                "rank": rank if trial.ok else None,
                "kind": trial.setting.kind,
                "setting": trial.setting.label,
                "features": trial.source,
                "val_accuracy": trial.val_accuracy,
                "val_macro_f1": trial.val_macro_f1 if trial.cv_accuracy is None else None,
                "cv_accuracy": trial.cv_accuracy,
                "cv_std": trial.cv_std,
                "test_accuracy": test.get("accuracy"),
                "test_macro_f1": test.get("macro_f1"),
                "fit_seconds": trial.fit_seconds,
                "chosen": chosen,
                "head_id": result.head_id if result else None,
                "error": trial.error,
            }
        )
    return rows + [s.row() for s in saved if s.trial is None]


def sweep(
    features: Sequence[str],
    *,
    options: SweepOptions = SweepOptions(),
    base: Sequence[HeadParams] = (),
    split: SplitOptions = SplitOptions(),
    job: JobOptions = JobOptions(),
    name: str | None = None,
    n_jobs: int = 2,
    reporter: Reporter = SILENT,
) -> SweepResult:
    """Fit a grid of head settings on feature sets `features`, choose on the validation part, save
    the best of each kind.

    Parameters
    ----------
    features
        Feature sets `dataset@backbone`; each is swept, and their join too when they hold the
        same images.
    options
        The grid and the ensemble size.
    base
        The parameters each kind's settings start from; the grid's values replace them.
    split, job, name, n_jobs, reporter
        The split (its validation part must not be empty), store and energy, NAME-KIND head
        ids, settings fitted in parallel threads, notes and `progress(done, total)`.

    Returns
    -------
    SweepResult
        Every setting's row, best validation accuracy first (test figures for the saved heads
        only), the saved heads (best overall first) and the table's file.

    Raises
    ------
    InvalidOptionError
        A bad grid, or an ensemble larger than the settings fitted.
    DatasetError, UnknownFeatureSetError
        A missing feature set, no validation part, too few images.
    HeadError
        A taken name, or no setting could be fitted.
    """
    opts = options.check()
    settings = expand_grid(opts.grid, base)
    notes: list[str] = []
    noted = Reporter(lambda line: (notes.append(line), reporter.log(line)), reporter.progress)
    names = list(features)
    with run_job("sweep", job, lazy=True, reporter=reporter) as run:
        kinds = list(dict.fromkeys(s.kind for s in settings)) + ([ENSEMBLE] if opts.ensemble else [])
        sources = load_sources(run.layout, names, split, noted)
        n_groups = len({s.group for s in sources})
        ids = _head_ids(run.layout, name, kinds, n_groups)
        run.begin()
        if opts.select == "cv":
            trials, sources, folds = _cross_validate_all(settings, sources, opts, n_jobs, noted)
        else:
            trials, folds = _fit_all(settings, sources, n_jobs, reporter.progress), {}
        em = run.stop_measuring()  # the fits and the choice; not the test scoring and the saving
        state = _Run(run.layout, run.run_id, len(settings), em, ids, opts.ensemble)
        by_label = {s.label: s for s in sources}
        saved = []
        for g in range(n_groups):
            group = [t for t in trials if by_label[t.source].group == g]
            saved += _save_group(state, g, group, by_label)
        rows = _rows(trials, saved)
        path = _write_table(run.layout, run.run_id, sources, settings, opts, rows, notes, folds)
        heads = [s.result for s in saved]
        run.record = _record(run.run_id, sources, len(settings), base, saved, path)
    return SweepResult(
        run.run_id, [s.label for s in sources], len(settings), rows, heads, heads[0].head_id if heads else None,
        str(path), run.seconds, run.emissions, notes,
    )  # fmt: skip


def _cross_validate_all(
    settings: list[Setting], sources: list[Source], opts: SweepOptions, n_jobs: int, noted
):
    """Every setting cross-validated on each source's training and validation rows; the settings a
    sweep saves (the best of each kind, the K best for an ensemble) refitted on all of them.
    Return the trials, the sources with validation folded into training, and the folds."""
    from featstore.heads.crossval import Folds, cross_validate, refit

    trials: list[Trial] = []
    folded, described = [], {}
    total = len(settings) * len(sources)
    for i, source in enumerate(sources):
        data = source.data
        n_classes = len(data.class_names)
        folds = Folds.of(data.labels, source.split, opts.cv_folds, opts.cv_repeats, source.split.seed or 0)
        if folds.folds < opts.cv_folds:
            noted.log(
                f"{source.label}: {folds.folds} folds (a class has {folds.folds} images in train and val)"
            )

        offset = i * len(settings)

        def step(done: int, _total: int, offset=offset) -> None:
            noted.progress(offset + done * len(settings) // max(_total, 1), total)

        mine = cross_validate(settings, data.X, data.labels, n_classes, folds, source.label, n_jobs, step)
        best = choose(mine)
        keep = {id(t) for t in best.values()}
        keep |= {id(t) for t in ranked(mine)[: opts.ensemble] if t.ok}
        for trial in mine:
            if id(trial) in keep:
                refit(trial, data.X, data.labels, n_classes, folds, n_jobs)
        trials += mine
        folded.append(replace(source, split=folds.folded_split(source.split)))
        described[source.label] = folds.describe(data.digests)
    noted.log(
        f"chose by {opts.cv_folds}-fold cross-validation repeated {opts.cv_repeats} times on the training and "
        "validation images; the chosen settings were refitted on all of them and scored once on test"
    )
    return trials, folded, described


def _fit_all(settings: list[Setting], sources: list[Source], n_jobs: int, progress) -> list[Trial]:
    total = len(settings) * len(sources)
    trials: list[Trial] = []
    for i, source in enumerate(sources):
        prep = Prepared.of(source.data.X, source.data.labels, source.split, len(source.data.class_names))
        offset = i * len(settings)

        def step(done: int, _total: int, offset=offset) -> None:
            progress(offset + done, total)

        trials += run_trials(settings, prep, source.label, n_jobs, step)
    return trials


def _write_table(layout: StoreLayout, run_id: str, sources, settings, opts: SweepOptions, rows, notes, folds):
    """`heads/comparisons/<run id>.json`: the ranked grid, what was swept and how (with
    cross-validation, each image's fold per repeat by content digest)."""
    doc = {
        "select": opts.select,
        **({"cv": folds} if folds else {}),
        "run_id": run_id,
        "feature_sets": [s.label for s in sources],
        "dataset": sources[0].data.feature_sets[0].split("@", 1)[0],
        "n_settings": len(settings),
        "split": sources[0].split.describe(),
        "grid": opts.grid if isinstance(opts.grid, (dict, type(None))) else str(opts.grid),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "rows": rows,
        "notes": notes,
    }
    return write_json(layout.heads / "comparisons" / f"{run_id}.json", doc, indent=1)


def _record(run_id: str, sources: list[Source], n_settings: int, base, saved, path) -> SweepRecord:
    first = sources[0]
    keys = "head_id kind setting features chosen val_accuracy test_accuracy test_macro_f1 fit_seconds".split()
    heads = [{k: s.row()[k] for k in keys} for s in saved]
    return SweepRecord(
        run_id,
        "sweep",
        dataset=first.data.feature_sets[0].split("@", 1)[0],
        counts={"n_settings": n_settings, "n_sources": len(sources), "n_heads": len(saved)},
        feature_sets=[s.label for s in sources],
        n_settings=n_settings,
        class_weight=next((p.class_weight for p in base if getattr(p, "class_weight", None)), None),
        split=first.split.describe(),
        heads=heads,
        best_head_id=heads[0]["head_id"] if heads else None,
        results=str(path),
    )
