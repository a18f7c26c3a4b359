"""Few-shot curves: test accuracy of heads trained on k images per class, k by k, repeat by repeat.

The validation part is cut to at most k per class too (a k-shot user has no more labels); the
test part is whole. Nothing is saved as a head: the curves go to the run log and the drawn
images' digests to `heads/comparisons/<run id>.json`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from featstore.data.options import ShotOptions, SplitOptions
from featstore.data.splits import Split, check_shots, sample_shots, split_from_digests
from featstore.errors import InvalidOptionError
from featstore.files import write_json
from featstore.heads.grid import expand_grid
from featstore.heads.metrics import class_probabilities
from featstore.heads.params import HeadParams, SweepOptions
from featstore.heads.registry import ALL, SWEEP
from featstore.heads.results import FewShotResult
from featstore.heads.training_data import Source, load_sources
from featstore.heads.trials import Prepared, Setting, Trial, choose, run_trials
from featstore.jobs import run_job
from featstore.options import JobOptions
from featstore.reporter import SILENT, Reporter
from featstore.store.layout import StoreLayout
from featstore.store.runlog import FewShotRecord


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
    """The k-shot draw `seed` of `source`, drawn on the first source of its images and mapped to
    the others through the content digests."""
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
    heads: Sequence[HeadParams] | SweepOptions,
    features: Sequence[str],
    *,
    shots: ShotOptions,
    base: Sequence[HeadParams] = (),
    split: SplitOptions = SplitOptions(),
    job: JobOptions = JobOptions(),
    n_jobs: int = 2,
    reporter: Reporter = SILENT,
) -> FewShotResult:
    """Few-shot curves: heads fitted on `shots.shots` images per class, `shots.repeats` draws each.

    Parameters
    ----------
    heads
        Parameters of one kind or several (their curves), or `SweepOptions` (the curves of the
        best of each kind and overall, chosen on each draw's cut validation part).
    features
        Feature sets `dataset@backbone` (each, and their join when they hold the same images).
    shots
        Images per class and repeats; draw r uses the split's seed plus r.
    base, split, job, n_jobs, reporter
        As for `featstore.sweep`.

    Returns
    -------
    FewShotResult
        The curves, best first within each number of shots, and the draws' file.

    Raises
    ------
    InvalidOptionError
        No shots, a bad shots value or grid, or an ensemble asked of a sweep.
    DatasetError
        Shots above the training images of the smallest class, a sweep with no validation
        part, a missing feature set.
    """
    shots = shots.check()
    if not shots.shots:
        raise InvalidOptionError("shots", "give at least one number of images per class, like 1,2,5,10")
    swept = isinstance(heads, SweepOptions)
    if swept and heads.check().ensemble:
        raise InvalidOptionError("ensemble", "few-shot runs save no heads; leave the ensemble out")
    if swept and heads.calibrate:
        raise InvalidOptionError("calibrate", "few-shot runs save no heads; leave the calibration out")
    if swept and heads.select == "cv":
        raise InvalidOptionError(
            "select", "few-shot sweeps choose on the validation part (cut to as many images per class)"
        )
    if isinstance(heads, HeadParams):
        heads = [heads]
    settings = expand_grid(heads.grid, base) if swept else [Setting(p.check()) for p in heads]
    mode = SWEEP if swept else (settings[0].kind if len(settings) == 1 else ALL)
    seeds = shots.seeds(split.seed)
    with run_job("few-shot", job, lazy=True, reporter=reporter) as run:
        notes: list[str] = []
        noted = Reporter(lambda line: (notes.append(line), reporter.log(line)), reporter.progress)
        sources = load_sources(run.layout, list(features), split, noted, need_val=swept)
        for s in sources:
            check_shots(s.split, s.data.labels, s.data.class_names, shots.shots)
        run.begin()
        curves, draws = _run(mode, settings, sources, (shots.shots, seeds), n_jobs, notes, reporter.progress)
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
    """Fit every setting on every draw of every source; return the curves and the draws' digests."""
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
                prep = Prepared.of(source.data.X, source.data.labels, split, len(source.data.class_names))
                trials = run_trials(settings, prep, source.label, n_jobs)
                _score_draw(mode, trials, source, split, k, curves, notes)
                done += len(settings)
                progress(done, total)
        firsts.setdefault(source.group, (source, bases))
    return curves, draws


def _digests(source: Source, split: Split) -> dict:
    return {p: [source.data.digests[i] for i in getattr(split, p)] for p in ("train", "val")}


def _write_draws(
    layout: StoreLayout, run_id: str, mode: str, sources, shots: ShotOptions, rows, draws, seeds
):
    """`heads/comparisons/<run id>.json`: the curves and every draw's images (digests)."""
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
    return write_json(layout.heads / "comparisons" / f"{run_id}.json", doc)
