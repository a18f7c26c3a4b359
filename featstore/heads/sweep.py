"""`featstore fit-head sweep`: a grid of head kinds and settings fitted in one run, chosen on the
validation part only, the best of each kind saved as an ordinary head.

Owns the run: the feature sets are read once (each set, and their join when they hold the same
images), split once per set of images, each setting fitted on the training part and scored on
the validation part (`trials`: scaling shared, settings in parallel threads), the best of each
kind and the best overall scored once on the test part and saved (`store.head_files`), with
`ensemble` K the soft vote of the K best settings saved too (`ensemble`); the whole ranked grid
goes to `heads/comparisons/<run id>.json` and the run to the log as a `SweepRecord`
(one `jobs.run_job("sweep")`).

Imports `heads` siblings (grid, trials, saved, ensemble, options, training data, results),
`data.splits`, `store`, `jobs`, `options`, `files`, `emissions` and `errors`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from featstore.data.splits import Split, SplitOptions, make_split, split_from_digests
from featstore.emissions import Emissions
from featstore.errors import DatasetError, HeadError, InvalidOptionError
from featstore.files import json_default, write_atomic
from featstore.heads.ensemble import KIND as ENSEMBLE
from featstore.heads.ensemble import Member, save_ensemble
from featstore.heads.grid import Setting, expand_grid
from featstore.heads.options import HeadConfig
from featstore.heads.registry import get_head_kind
from featstore.heads.results import FitResult
from featstore.heads.saved import head_files, head_meta, score_parts
from featstore.heads.training_data import TrainingData, check_feature_sets, load_training_data
from featstore.heads.trials import Prepared, Trial, choose, ranked, run_trials
from featstore.jobs import JobOptions, run_job
from featstore.options import Options, merge_options
from featstore.store.head_files import head_dir, new_head_id, save_head
from featstore.store.layout import StoreLayout
from featstore.store.runlog import SweepRecord

Log = Callable[[str], None]
Progress = Callable[..., None]
#: The columns of a sweep's table, in order (the keys of each row).
COLUMNS = [
    "rank",
    "kind",
    "setting",
    "features",
    "val_accuracy",
    "val_macro_f1",
    "test_accuracy",
    "test_macro_f1",
    "fit_seconds",
    "chosen",
    "head_id",
    "error",
]


@dataclass(frozen=True)
class SweepOptions(Options):
    """What a sweep fits: `grid` (a grid file, JSON or YAML, or a grid as a dict; None: the
    default grid, see `featstore.heads.grid`) and `ensemble` (K: also save the soft vote of the
    K best settings as a head of kind `ensemble`; 0: none)."""

    grid: str | dict | None = None
    ensemble: int = 0

    def check(self) -> SweepOptions:
        """Raise InvalidOptionError for an ensemble of 1 or a negative or fractional size."""
        if not isinstance(self.ensemble, int) or isinstance(self.ensemble, bool) or self.ensemble < 0:
            raise InvalidOptionError("ensemble", f"must be a whole number of heads, not {self.ensemble!r}")
        if self.ensemble == 1:
            raise InvalidOptionError("ensemble", "an ensemble needs at least 2 heads (0: no ensemble)")
        return self


@dataclass
class SweepResult:
    """A finished sweep: every setting's row (best first), the heads it saved, where the table is."""

    run_id: str
    feature_sets: list[str]
    n_settings: int
    rows: list[dict]
    heads: list[FitResult]
    best_head_id: str | None
    path: str
    seconds: float | None = None
    emissions: Emissions = field(default_factory=Emissions)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """Return a JSON-ready dict."""
        return asdict(self)


@dataclass
class Source:
    """One feature-set combination a sweep fits on: its label (`a@x` or `a@x+b@y`), rows, split
    and the index of its group (sources of the same images share a split and a choice)."""

    label: str
    data: TrainingData
    split: Split
    group: int


def sweep_options(
    sweep: SweepOptions | None, head: HeadConfig | None, split, job: JobOptions | None, flat: dict
) -> tuple[SweepOptions, HeadConfig, SplitOptions, JobOptions]:
    """The checked option objects of `sweep` from the objects and flat keywords `flat` (one rule:
    `featstore.options.merge_options`; `seed` seeds the split and the heads)."""
    flat = dict(flat)
    if isinstance(split, str):
        flat["split"], split = split, None
    if "seed" in flat and head is None:
        flat.setdefault("random_state", flat["seed"])
    given = {SweepOptions: sweep, HeadConfig: head, SplitOptions: split, JobOptions: job}
    return tuple(merge_options(given, flat))  # type: ignore[return-value]


def load_sources(
    layout: StoreLayout, names: list[str], options: SplitOptions, log: Log, need_val: bool = True
) -> list[Source]:
    """Each feature set alone, and all of them joined when they hold the same images; one split
    per set of images (the others' mapped through the content digests). Each file is read once.

    Raises
    ------
    DatasetError
        With `need_val`, a split with no validation part (a sweep chooses on it); and what
        `make_split` and `load_training_data` raise.
    """
    check_feature_sets(names)
    cache: dict = {}
    datas = [(n, load_training_data(layout, [n], cache)) for n in names]
    same = len(names) > 1 and all(set(d.digests) == set(datas[0][1].digests) for _, d in datas)
    if same:
        datas.append(("+".join(names), load_training_data(layout, names, cache)))
    elif len(names) > 1:
        log(f"{', '.join(names)} do not hold the same images; each is swept alone, not joined")
    groups: dict[frozenset, tuple[int, Split, list[str]]] = {}
    out = []
    for label, data in datas:
        key = frozenset(data.digests)
        if key not in groups:
            split = make_split(data.labels, data.split, data.class_names, options, digests=data.digests)
            if split.note:
                log(f"{label}: {split.note}")
            if need_val and not len(split.val):
                raise DatasetError(
                    f"{label}: the split has no validation part, and a sweep chooses its settings on it; "
                    "give --val-size above 0 (or a val/ folder)"
                )
            groups[key] = (len(groups), split, data.digests)
        index, split, digests = groups[key]
        if data.digests is not digests:
            parts = {p: [digests[i] for i in getattr(split, p)] for p in ("train", "val", "test")}
            split = split_from_digests(parts, data.digests, split.describe())
        out.append(Source(label, data, split, index))
    return out


def _head_ids(layout: StoreLayout, name: str | None, kinds: list[str], n_groups: int) -> dict:
    """{(group, kind): head id} for a named sweep (NAME-KIND, NAME-KIND-<group> with several
    sets of images); empty without a name. Raises HeadError when one is taken."""
    if not name:
        return {}
    ids = {
        (g, k): f"{name}-{k}" + (f"-{g + 1}" if n_groups > 1 else "") for g in range(n_groups) for k in kinds
    }
    for head_id in ids.values():
        if head_dir(layout, head_id).exists():
            raise HeadError(f"head {head_id} exists already; choose another --name or remove it")
    return ids


def _save_trial(
    layout: StoreLayout, run_id: str, trial: Trial, source: Source, head_id, em, extra
) -> FitResult:
    """Score `trial`'s estimator on every part (the test part for the first time), save it as an
    ordinary head and return its FitResult."""
    setting, data, split = trial.setting, source.data, source.split
    scored = score_parts(trial.estimator, data, split, setting.kind)
    head_id = head_id or new_head_id(setting.kind, data.feature_sets)
    config = setting.config.to_dict()
    meta = {**head_meta((run_id, head_id), config, data, split, scored, trial.fit_seconds, em), **extra}
    files = head_files(meta, get_head_kind(setting.kind).probabilities, trial.estimator, data, split, scored)
    path = save_head(layout, head_id, trial.estimator, meta, files)
    return FitResult(
        head_id, setting.kind, data.feature_sets, str(path), config, split.describe(), scored.metrics,
        trial.fit_seconds, scored.predict_ips, len(split.train), 0, em,
    )  # fmt: skip


def _chosen_label(kind: str, overall: bool) -> str:
    return "best" if overall else f"best {kind}"


@dataclass
class _Saved:
    """A head a sweep saved: the trial it came from (None for an ensemble), why (`chosen`), its
    setting's label and its FitResult."""

    trial: Trial | None
    chosen: str
    setting: str
    result: FitResult


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
        result = _save_trial(
            run.layout, run.run_id, trial, sources[trial.source], run.ids.get((group, kind)), run.em, extra
        )
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
        Member(t.estimator, t.setting.kind, t.setting.label, t.setting.config.to_dict())
        for t in pool[: run.ensemble]
    ]
    source = sources[overall.source]
    chosen = f"ensemble of the {run.ensemble} best"
    extra = {
        "sweep": {"run_id": run.run_id, "setting": chosen, "chosen": chosen, "n_settings": run.n_settings}
    }
    result, _ = save_ensemble(
        run.layout,
        run.run_id,
        members,
        source.data,
        source.split,
        run.ids.get((group, ENSEMBLE)),
        run.em,
        extra,
    )
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
                "rank": rank if trial.estimator is not None else None,
                "kind": trial.setting.kind,
                "setting": trial.setting.label,
                "features": trial.source,
                "val_accuracy": trial.val_accuracy,
                "val_macro_f1": trial.val_macro_f1,
                "test_accuracy": test.get("accuracy"),
                "test_macro_f1": test.get("macro_f1"),
                "fit_seconds": trial.fit_seconds,
                "chosen": chosen,
                "head_id": result.head_id if result else None,
                "error": trial.error,
            }
        )
    for s in saved:
        if s.trial is None:
            result, chosen = s.result, s.chosen
            val, test = result.metrics.get("val") or {}, result.metrics.get("test") or {}
            rows.append(
                {
                    "rank": None, "kind": ENSEMBLE, "setting": s.setting, "features": "+".join(result.feature_sets),
                    "val_accuracy": val.get("accuracy"), "val_macro_f1": val.get("macro_f1"),
                    "test_accuracy": test.get("accuracy"), "test_macro_f1": test.get("macro_f1"),
                    "fit_seconds": result.fit_seconds, "chosen": chosen, "head_id": result.head_id, "error": None,
                }
            )  # fmt: skip
    return rows


def sweep(
    features: Sequence[str],
    *,
    sweep: SweepOptions | None = None,
    head: HeadConfig | None = None,
    split: SplitOptions | str | None = None,
    job: JobOptions | None = None,
    name: str | None = None,
    n_jobs: int = 2,
    log: Log | None = None,
    progress: Progress | None = None,
    **options,
) -> SweepResult:
    """Fit a grid of head settings on feature sets `features`, choose on the validation part, save
    the best of each kind.

    Parameters
    ----------
    features
        Feature sets `dataset@backbone`; each is swept, and when they hold the same images their
        join too (columns side by side).
    sweep
        The grid and the ensemble size (`SweepOptions`).
    head
        Options every setting starts from (`HeadConfig`: `class_weight`, `epochs`,
        `random_state`, ...); the grid's values replace them.
    split
        How the images are split (`SplitOptions`); the validation part must not be empty.
    job
        Store, energy measurement and country (`JobOptions`).
    name
        Save the heads as NAME-KIND (NAME-ensemble) instead of generated ids.
    n_jobs
        Settings fitted in parallel (threads).
    log
        Called with one line per note (a re-mapped split, sets not joined).
    progress
        Called as `progress(done, total)` after each setting.
    **options
        Flat keywords instead of the objects: `grid`, `ensemble`, any `HeadConfig` or
        `SplitOptions` field, `store`, `emissions`, `country` (`seed` seeds split and heads).

    Returns
    -------
    SweepResult
        `rows` (every setting, best validation accuracy first; test figures for the saved
        heads only), `heads` (FitResults, best overall first), the table's file.

    Raises
    ------
    InvalidOptionError
        A bad grid (file missing or unreadable, unknown kind or setting, bad value), a bad
        option, an ensemble larger than the settings fitted.
    DatasetError, UnknownFeatureSetError
        Missing feature set, a split with no validation part, too few images.
    HeadError
        A taken name, or no setting could be fitted.
    """
    opts, base, split_opts, job_opts = sweep_options(sweep, head, split, job, options)
    settings = expand_grid(opts.grid, base)
    notes: list[str] = []

    def note(line: str) -> None:
        notes.append(line)
        if log is not None:
            log(line)

    names = list(features)
    with run_job("sweep", job_opts, lazy=True, log=log) as run:
        kinds = list(dict.fromkeys(s.kind for s in settings)) + ([ENSEMBLE] if opts.ensemble else [])
        sources = load_sources(run.layout, names, split_opts, note)
        n_groups = len({s.group for s in sources})
        ids = _head_ids(run.layout, name, kinds, n_groups)
        run.begin()
        trials = _fit_all(settings, sources, n_jobs, progress)
        em = run.stop_measuring()  # the fits and the choice; not the test scoring and the saving
        state = _Run(run.layout, run.run_id, len(settings), em, ids, opts.ensemble)
        by_label = {s.label: s for s in sources}
        saved = []
        for g in range(n_groups):
            group = [t for t in trials if by_label[t.source].group == g]
            saved += _save_group(state, g, group, by_label)
        rows = _rows(trials, saved)
        path = _write_table(run.layout, run.run_id, sources, settings, opts, rows, notes)
        heads = [s.result for s in saved]
        run.record = _record(run.run_id, sources, len(settings), base, saved, path)
    return SweepResult(
        run.run_id, [s.label for s in sources], len(settings), rows, heads, heads[0].head_id if heads else None,
        str(path), run.seconds, run.emissions, notes,
    )  # fmt: skip


def _fit_all(settings: list[Setting], sources: list[Source], n_jobs: int, progress) -> list[Trial]:
    total = len(settings) * len(sources)
    trials: list[Trial] = []
    for i, source in enumerate(sources):
        prep = Prepared(source.data.X, source.data.labels, source.split, len(source.data.class_names))
        offset = i * len(settings)

        def step(done: int, _total: int, offset=offset) -> None:
            if progress is not None:
                progress(offset + done, total)

        trials += run_trials(settings, prep, source.label, n_jobs, step)
    return trials


def _write_table(layout: StoreLayout, run_id: str, sources, settings, opts: SweepOptions, rows, notes):
    """`heads/comparisons/<run id>.json`: the ranked grid, what was swept and how."""
    folder = layout.heads / "comparisons"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{run_id}.json"  # sweep-<time>-<hex>.json
    doc = {
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
    write_atomic(path, json.dumps(doc, indent=1, default=json_default).encode())
    return path


def _record(
    run_id: str, sources: list[Source], n_settings: int, base: HeadConfig, saved, path
) -> SweepRecord:
    first = sources[0]
    heads = []
    for s in saved:
        r = s.result
        val, test = r.metrics.get("val") or {}, r.metrics.get("test") or {}
        heads.append(
            {
                "head_id": r.head_id,
                "kind": r.kind,
                "setting": s.setting,
                "features": "+".join(r.feature_sets),
                "chosen": s.chosen,
                "val_accuracy": val.get("accuracy"),
                "test_accuracy": test.get("accuracy"),
                "test_macro_f1": test.get("macro_f1"),
                "fit_seconds": r.fit_seconds,
            }
        )
    return SweepRecord(
        run_id,
        "sweep",
        dataset=first.data.feature_sets[0].split("@", 1)[0],
        counts={"n_settings": n_settings, "n_sources": len(sources), "n_heads": len(saved)},
        feature_sets=[s.label for s in sources],
        n_settings=n_settings,
        class_weight=base.class_weight,
        split=first.split.describe(),
        heads=heads,
        best_head_id=heads[0]["head_id"] if heads else None,
        results=str(path),
    )
