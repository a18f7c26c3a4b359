"""Few-shot curves: `featstore fit-head KIND|all|sweep --shots 1,2,5,10,20 --repeats 5`.

For each number of shots k and each repeat (its own recorded seed), k training images per class
are drawn from the training part and the validation part is cut to at most k per class (it
chooses a sweep's settings and stops the dense head's training, so it must not hold more labels
than the k-shot user has); the test part is unchanged. Each head kind (or, for a sweep, the
best of each kind and the best overall, chosen on the cut validation part) is fitted on the
draw and scored on the whole test part. The result is the mean and standard deviation of test
accuracy per head and k. Nothing is saved as a head: the curves go to the run log as a
`FewShotRecord` (one `jobs.run_job("few-shot")`) and the drawn images' digests to
`heads/comparisons/<run id>.json`.

Imports `heads` siblings (grid, trials, registry, metrics, options, sweep's option objects),
`data.splits`, `store`, `jobs`, `files`, `emissions` and `errors`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from featstore.data.splits import (
    ShotOptions,
    Split,
    SplitOptions,
    check_shots,
    sample_shots,
    split_from_digests,
)
from featstore.emissions import Emissions
from featstore.errors import InvalidOptionError
from featstore.files import json_default, write_atomic
from featstore.heads.grid import Setting, expand_grid
from featstore.heads.metrics import class_probabilities
from featstore.heads.options import HeadConfig
from featstore.heads.registry import ALL, SWEEP, kinds_of
from featstore.heads.sweep import Source, SweepOptions, load_sources
from featstore.heads.trials import Prepared, Trial, choose, run_trials
from featstore.jobs import JobOptions, run_job
from featstore.options import merge_options
from featstore.store.layout import StoreLayout
from featstore.store.runlog import FewShotRecord

Log = Callable[[str], None]
#: The columns of a few-shot table, in order.
COLUMNS = ["head", "features", "shots", "mean", "std", "n", "min", "max"]


@dataclass
class FewShotResult:
    """Few-shot curves: one row per head, features and shots (`mean`, `std`, `n`, `min`, `max`
    of the test accuracy over the repeats, and each draw's accuracy in `accuracies`)."""

    run_id: str
    mode: str
    feature_sets: list[str]
    shots: list[int]
    repeats: int
    seeds: list[int]
    curves: list[dict]
    path: str
    seconds: float | None = None
    emissions: Emissions = field(default_factory=Emissions)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """Return a JSON-ready dict."""
        return asdict(self)

    def rows(self) -> list[dict]:
        """The table's rows (`COLUMNS`), without the per-draw lists."""
        return [{k: c.get(k) for k in COLUMNS} for c in self.curves]


def _settings(mode: str, base: HeadConfig, grid) -> list[Setting]:
    if mode == SWEEP:
        return expand_grid(grid, base)
    return [Setting(k.name, base.for_kind(k.name, keep_C=mode != ALL), {}) for k in kinds_of(mode)]


def _test_accuracy(trial: Trial, data, split: Split) -> float:
    proba = class_probabilities(trial.estimator, data.X[split.test], len(data.class_names))
    return float((proba.argmax(axis=1) == data.labels[split.test]).mean())


@dataclass
class _Curves:
    """Accuracies collected per (head, features, shots), and the setting each draw chose."""

    points: dict = field(default_factory=dict)
    chosen: dict = field(default_factory=dict)

    def add(self, head: str, source: str, shots: int, accuracy: float, setting: str | None = None) -> None:
        self.points.setdefault((head, source, shots), []).append(accuracy)
        if setting is not None:
            self.chosen.setdefault((head, source, shots), []).append(setting)

    def rows(self) -> list[dict]:
        out = []
        for (head, source, shots), accs in self.points.items():
            a = np.asarray(accs)
            row = {
                "head": head,
                "features": source,
                "shots": shots,
                "mean": round(float(a.mean()), 6),
                "std": round(float(a.std(ddof=1)) if len(a) > 1 else 0.0, 6),
                "n": len(a),
                "min": round(float(a.min()), 6),
                "max": round(float(a.max()), 6),
                "accuracies": [round(float(x), 6) for x in accs],
            }
            if (head, source, shots) in self.chosen:
                row["chosen"] = self.chosen[(head, source, shots)]
            out.append(row)
        return out


def _draw(source: Source, first: Source | None, base: Split, k: int, seed: int) -> Split:
    """The k-shot draw `seed` of `source`: drawn on the first source of its images, mapped to the
    others through the content digests (so every source of one set of images gets one draw)."""
    if first is None:
        return sample_shots(source.split, source.data.labels, k, seed, class_names=source.data.class_names)
    parts = {p: [first.data.digests[i] for i in getattr(base, p)] for p in ("train", "val", "test")}
    return split_from_digests(parts, source.data.digests, base.describe())


def _score_draw(mode: str, trials: list[Trial], source: Source, split: Split, k: int, curves: _Curves, notes):
    """Add the test accuracy of the draw's heads: every trial (a kind), or the chosen ones (sweep)."""
    for t in trials:
        if t.error:
            line = f"{t.setting.label} at {k} shots: {t.error}"
            if line not in notes:
                notes.append(line)
    if mode != SWEEP:
        for t in trials:
            if t.estimator is not None:
                curves.add(t.setting.kind, source.label, k, _test_accuracy(t, source.data, split))
        return
    for kind, t in choose(trials).items():
        head = "best" if kind == "" else f"best {kind}"
        curves.add(head, source.label, k, _test_accuracy(t, source.data, split), t.setting.label)


def few_shot(
    mode: str,
    features: Sequence[str],
    *,
    shots: ShotOptions | None = None,
    sweep: SweepOptions | None = None,
    head: HeadConfig | None = None,
    split: SplitOptions | str | None = None,
    job: JobOptions | None = None,
    n_jobs: int = 2,
    log: Log | None = None,
    progress: Callable[..., None] | None = None,
    **options,
) -> FewShotResult:
    """Few-shot curves of head kind `mode` (a kind, `all`, or `sweep`: a grid chosen on validation).

    Parameters
    ----------
    mode
        svm, logistic, dense, knn (a registered kind fitted on features), `all` (each of them)
        or `sweep` (the grid of `sweep.grid`; the curves are the best of each kind and the
        best overall, chosen on the cut validation part of each draw).
    features
        Feature sets `dataset@backbone` (each, and their join when they hold the same images).
    shots
        `ShotOptions`: the shots (images per class) and repeats; draw r uses the split's seed
        plus r. A list of numbers is `ShotOptions(shots=...)`.
    sweep, head, split, job
        The grid, head options, split and job, as for `featstore.heads.sweep.sweep`.
    **options
        Flat keywords instead of the objects: `shots`, `repeats`, `grid`, any `HeadConfig` or
        `SplitOptions` field, `store`, `emissions`, `country` (`seed` seeds the split, the
        heads and the first draw).

    Returns
    -------
    FewShotResult
        The curves, best first within each number of shots, and the draws' file.

    Raises
    ------
    InvalidOptionError
        No shots, a bad shots value or grid, or an option the mode does not take.
    DatasetError
        Shots larger than the training images of the smallest class (named), a split with no
        validation part for a sweep, a missing feature set.
    HeadError
        An unknown kind, or `ensemble`.
    """
    flat = dict(options)
    if isinstance(split, str):
        flat["split"], split = split, None
    if shots is not None and not isinstance(shots, ShotOptions):  # shots=(1, 5) for ShotOptions(shots=...)
        flat["shots"], shots = shots, None
    if "seed" in flat and head is None:
        flat.setdefault("random_state", flat["seed"])
    given = {ShotOptions: shots, SweepOptions: sweep, HeadConfig: head, SplitOptions: split, JobOptions: job}
    shots, sweep_opts, base, split_opts, job_opts = merge_options(given, flat)
    if not shots.shots:
        raise InvalidOptionError("shots", "give at least one number of images per class, like 1,2,5,10")
    if sweep_opts.ensemble:
        raise InvalidOptionError("ensemble", "few-shot runs save no heads; leave the ensemble out")
    if sweep_opts.grid is not None and mode != SWEEP:
        raise InvalidOptionError("grid", f"a grid is for a sweep (fit-head sweep), not for fit-head {mode}")
    seeds = shots.seeds(split_opts.seed)
    settings = _settings(mode, base, sweep_opts.grid)
    with run_job("few-shot", job_opts, lazy=True, log=log) as run:
        notes: list[str] = []

        def note(line: str) -> None:
            notes.append(line)
            if log is not None:
                log(line)

        sources = load_sources(run.layout, list(features), split_opts, note, need_val=mode == SWEEP)
        for s in sources:
            check_shots(s.split, s.data.labels, s.data.class_names, shots.shots)
        run.begin()
        curves, draws = _run(mode, settings, sources, (shots.shots, seeds), n_jobs, notes, progress)
        run.stop_measuring()
        rows = sorted(curves.rows(), key=lambda r: (r["features"], r["shots"], -r["mean"]))
        path = _write_draws(run.layout, run.run_id, mode, sources, shots, rows, draws, seeds)
        run.record = FewShotRecord(
            run.run_id,
            "few-shot",
            dataset=sources[0].data.feature_sets[0].split("@", 1)[0],
            counts={"n_settings": len(settings), "n_draws": len(shots.shots) * shots.repeats},
            feature_sets=[s.label for s in sources],
            mode=mode,
            shots=list(shots.shots),
            repeats=shots.repeats,
            seeds=seeds,
            curves=rows,
            split=sources[0].split.describe(),
            results=str(path),
        )
    return FewShotResult(
        run.run_id, mode, [s.label for s in sources], list(shots.shots), shots.repeats, seeds, rows,
        str(path), run.seconds, run.emissions, notes,
    )  # fmt: skip


def _run(mode, settings, sources: list[Source], draws_of: tuple, n_jobs: int, notes: list[str], progress):
    """Fit every setting on every draw (`draws_of`: the shots and the seeds) of every source;
    return the curves and the draws' digests."""
    curves, draws = _Curves(), []
    shots, seeds = draws_of
    total = len(sources) * len(shots) * len(seeds) * len(settings)
    done = 0
    firsts: dict[int, tuple[Source, dict]] = {}
    for source in sources:
        first, bases = firsts.get(source.group, (None, {}))
        for k in shots:
            for seed in seeds:
                split = _draw(source, first, bases.get((k, seed)), k, seed)
                if first is None:
                    bases[(k, seed)] = split
                    draws.append(
                        {"features": source.label, "shots": k, "seed": seed, **_digests(source, split)}
                    )
                prep = Prepared(source.data.X, source.data.labels, split, len(source.data.class_names))
                trials = run_trials(settings, prep, source.label, n_jobs)
                _score_draw(mode, trials, source, split, k, curves, notes)
                done += len(settings)
                if progress is not None:
                    progress(done, total)
        firsts.setdefault(source.group, (source, bases))
    return curves, draws


def _digests(source: Source, split: Split) -> dict:
    return {p: [source.data.digests[i] for i in getattr(split, p)] for p in ("train", "val")}


def _write_draws(
    layout: StoreLayout, run_id: str, mode: str, sources, shots: ShotOptions, rows, draws, seeds
):
    """`heads/comparisons/<run id>.json`: the curves and every draw's images (digests)."""
    folder = layout.heads / "comparisons"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{run_id}.json"  # few-shot-<time>-<hex>.json
    doc = {
        "run_id": run_id,
        "mode": mode,
        "feature_sets": [s.label for s in sources],
        "shots": list(shots.shots),
        "repeats": shots.repeats,
        "seeds": seeds,
        "split": sources[0].split.describe(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "curves": rows,
        "draws": draws,
    }
    write_atomic(path, json.dumps(doc, default=json_default).encode())
    return path
