"""`featstore fit-head sweep`: a grid of settings fitted in one run, chosen on data the test never
sees (the validation part, or cross-validation on training and validation); the best of each
kind (and a greedy ensemble, chosen over them only beyond noise) saved as ordinary heads."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

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
from featstore.heads.selection import EnsembleChoice, select_ensemble
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
    calibrate: str | None = None
    held: dict | None = None


@dataclass
class _Plan:
    """One set of images' trials, the best of each kind (`best`, "" the best overall), and the
    greedy ensemble chosen among the best overall's source (`choice` over `pool`), if asked."""

    group: int
    trials: list[Trial]
    best: dict[str, Trial]
    choice: EnsembleChoice | None = None
    pool: list[Trial] | None = None
    reason: str = ""


def _plan(group: int, trials: list[Trial], rounds: int, held: dict) -> _Plan:
    """The best of each kind and, with `rounds`, the greedy ensemble on held-out probabilities."""
    best = choose(trials)
    if "" not in best:
        raise HeadError(
            "no setting of the grid could be fitted: " + "; ".join(sorted({t.error or "" for t in trials}))
        )
    plan = _Plan(group, trials, best)
    if rounds:
        overall = best[""]
        pool = [t for t in trials if t.source == overall.source and t.ok and t.held is not None]
        if len(pool) < 2:
            raise InvalidOptionError(
                "ensemble", f"needs at least 2 fitted settings, but {overall.source} has {len(pool)}"
            )
        y, groups, _ = held[overall.source]
        plan.choice = select_ensemble(np.stack([t.held for t in pool]), y, groups, rounds)
        plan.pool = pool
        plan.reason = plan.choice.reason([t.setting.label for t in pool], overall.setting.label)
    return plan


def _to_fit(plan: _Plan) -> list[Trial]:
    """The trials a plan saves: the best of each kind and the ensemble's members."""
    out = {id(t): t for t in plan.best.values()}
    if plan.choice is not None:
        out |= {id(plan.pool[i]): plan.pool[i] for i in plan.choice.members}
    return list(out.values())


def _save_group(run: _Run, plan: _Plan, sources: dict[str, Source]) -> list[_Saved]:
    """Save the best trial of each kind of one set of images (and the ensemble), best overall first."""
    best = dict(plan.best)
    overall = best.pop("")
    preferred = plan.choice is not None and plan.choice.preferred
    saved = []
    for kind, trial in [
        (overall.setting.kind, overall),
        *((k, t) for k, t in best.items() if t is not overall),
    ]:
        chosen = _chosen_label(kind, trial is overall and not preferred)
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
        if run.calibrate:
            from featstore.heads.calibration import calibrated_fit

            y, _, where = run.held[trial.source]
            fitted = calibrated_fit(fitted, run.calibrate, trial.held, y, where)
        result, _ = save_fitted(run.layout, run.run_id, run.ids.get((plan.group, kind)), fitted)
        saved.append(_Saved(trial, chosen, trial.setting.label, result))
    if plan.choice is not None and len(plan.choice.members) > 1:
        ens = _save_sweep_ensemble(run, plan, overall, sources)
        saved.insert(0, ens) if preferred else saved.append(ens)
    return saved


def _save_sweep_ensemble(run: _Run, plan: _Plan, overall: Trial, sources) -> _Saved:
    """The greedy ensemble on the best setting's features, saved with its weights."""
    choice = plan.choice
    trials = [plan.pool[i] for i in choice.members]
    members = [
        Member(t.estimator, t.setting.kind, t.setting.label, t.setting.params.to_dict()) for t in trials
    ]
    source = sources[overall.source]
    chosen = "best" if choice.preferred else "not chosen: within noise"
    record = {
        "members": [t.setting.label for t in trials],
        "weights": choice.weights,
        "gain": choice.gain,
        "se": choice.se,
        "groups": choice.groups,
        "preferred": choice.preferred,
        "reason": plan.reason,
    }
    extra = {
        "sweep": {
            "run_id": run.run_id, "setting": "greedy ensemble", "chosen": chosen,
            "n_settings": run.n_settings, "ensemble": record,
        }
    }  # fmt: skip
    fitted = vote(members, source.data, source.split, run.em, extra, weights=choice.weights)
    result, _ = save_fitted(run.layout, run.run_id, run.ids.get((plan.group, ENSEMBLE)), fitted)
    label = "greedy: " + ", ".join(
        f"{t.setting.label} x{choice.counts[i]}" for i, t in zip(choice.members, trials, strict=True)
    )
    return _Saved(None, chosen, label, result)


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
    """Fit a grid of head settings on feature sets `features`, choose on the validation part or
    by cross-validation (`options.select`; auto: cross-validation when the validation part has
    fewer than `AUTO_CV_BELOW` images), save the best of each kind and, with
    `options.ensemble`, the greedy ensemble.

    Parameters
    ----------
    features
        Feature sets `dataset@backbone`; each is swept, and their join too when they hold the
        same images.
    options
        The grid, the ensemble's picks and how settings are chosen.
    base
        The parameters each kind's settings start from; the grid's values replace them.
    split, job, name, n_jobs, reporter
        The split (its validation part must not be empty with select val), store and energy, NAME-KIND head
        ids, settings fitted in parallel threads, notes and `progress(done, total)`.

    Returns
    -------
    SweepResult
        Every setting's row, best first (test figures for the saved heads only), the saved
        heads (the chosen one first) and the table's file; `notes` say how it chose.

    Raises
    ------
    InvalidOptionError
        A bad grid or selection, or an ensemble with fewer than 2 settings fitted.
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
        sources = load_sources(run.layout, names, split, noted, need_val=opts.select == "val")
        n_val = min(len(s.split.val) for s in sources)
        how = opts.resolve(n_val)
        if opts.select == "auto":
            noted.log(opts.why(n_val))
        n_groups = len({s.group for s in sources})
        ids = _head_ids(run.layout, name, kinds, n_groups)
        run.begin()
        if how == "cv":
            trials, sources, folds, held = _cross_validate_all(settings, sources, opts, n_jobs, noted)
        else:
            trials, folds = _fit_all(settings, sources, n_jobs, reporter.progress), {}
            held = {s.label: _val_rows(s) for s in sources}
        by_label = {s.label: s for s in sources}
        plans = [
            _plan(g, [t for t in trials if by_label[t.source].group == g], opts.ensemble, held)
            for g in range(n_groups)
        ]
        if how == "cv":
            _refit_all([t for p in plans for t in _to_fit(p)], by_label, folds, n_jobs)
        for p in plans:
            if p.reason:
                noted.log(p.reason)
        em = run.stop_measuring()  # the fits and the choice; not the test scoring and the saving
        state = _Run(run.layout, run.run_id, len(settings), em, ids, opts.calibrate, held)
        saved = [s for p in plans for s in _save_group(state, p, by_label)]
        for t in trials:
            t.held = None
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
    """Every setting cross-validated on each source's training and validation rows (estimators
    come later, from `_refit_all`). Return the trials, the sources with validation folded into
    training, the folds ({label: Folds}) and each source's held-out labels, groups and what they
    are (the pool's labels, its folds of the first repeat, `Folds.held_out`)."""
    from featstore.heads.crossval import Folds, cross_validate

    trials: list[Trial] = []
    folded, drawn, held, firsts = [], {}, {}, {}
    total = len(settings) * len(sources)
    for i, source in enumerate(sources):
        data = source.data
        n_classes = len(data.class_names)
        first = firsts.get(source.group)
        if first is None:
            seed = source.split.seed or 0
            folds = Folds.of(data.labels, source.split, opts.cv_folds, opts.cv_repeats, seed)
            firsts[source.group] = (folds, data.digests)
        else:  # the same images in another feature set: the same folds, image by image
            folds = first[0].for_rows(first[1], data.digests, source.split)
        if first is None and folds.folds < opts.cv_folds:
            noted.log(
                f"{source.label}: {folds.folds} folds (a class has {folds.folds} images in train and val)"
            )

        offset = i * len(settings)

        def step(done: int, _total: int, offset=offset) -> None:
            noted.progress(offset + done * len(settings) // max(_total, 1), total)

        trials += cross_validate(settings, data.X, data.labels, n_classes, folds, source.label, n_jobs, step)
        folded.append(replace(source, split=folds.folded_split(source.split)))
        drawn[source.label] = folds
        held[source.label] = (data.labels[folds.pool], folds.assignment[:, 0].astype(int), folds.held_out)
    noted.log(
        f"chose by {opts.cv_folds}-fold cross-validation repeated {opts.cv_repeats} times on the training and "
        "validation images; the chosen settings were refitted on all of them and scored once on test"
    )
    return trials, folded, drawn, held


def _refit_all(trials: list[Trial], sources: dict[str, Source], folds: dict, n_jobs: int) -> None:
    """Fit each trial's setting on all of its source's cross-validated rows."""
    from featstore.heads.crossval import refit

    for trial in trials:
        data = sources[trial.source].data
        refit(trial, data.X, data.labels, len(data.class_names), folds[trial.source], n_jobs)


def _val_rows(source: Source, groups: int = 5) -> tuple[np.ndarray, np.ndarray, str]:
    """The labels of a source's validation rows, a group for each (up to `groups`, each class
    dealt round-robin in a seeded order) for the ensemble's cross-checked comparison, and what
    they are."""
    y = source.data.labels[source.split.val]
    k = max(1, min(groups, len(y)))
    out = np.zeros(len(y), dtype=int)
    rng = np.random.default_rng(source.split.seed or 0)
    start = 0
    for c in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == c))
        out[rows] = (start + np.arange(len(rows))) % k
        start += len(rows)
    return y, out, "validation images"


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


def _write_table(layout: StoreLayout, run_id: str, sources, settings, opts: SweepOptions, rows, notes, drawn):
    """`heads/comparisons/<run id>.json`: the ranked grid, what was swept and how (with
    cross-validation, each image's fold per repeat by content digest)."""
    doc = {
        "select": "cv" if drawn else "val",
        "asked": opts.select,
        **({"cv": {s.label: drawn[s.label].describe(s.data.digests) for s in sources}} if drawn else {}),
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
