"""`featstore fit-head`: heads trained and scored on cached features, then saved.

Owns the loop a user repeats: load one or more feature sets (joined row by row through the
content digests, `training_data`), split (`data.splits`), build and fit each kind (the
`registry`), score every part and write the head's files (`saved`), save the head
(`store.head_files`, which claims the name first) and log the run, each fit one
`jobs.run_job("fit-head")`. `evaluate` (a saved head on other features) lives in `evaluation`
and is re-exported here.

Imports `heads` siblings, `store`, `data`, `jobs`, `files`, `deps`, `options` and `errors`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from featstore.data.splits import Split, SplitOptions, make_split
from featstore.deps import package_versions
from featstore.errors import HeadError, InvalidOptionError
from featstore.files import write_atomic
from featstore.heads.evaluation import evaluate
from featstore.heads.options import HeadConfig
from featstore.heads.registry import ALL, FitContext, get_head_kind, kinds_of
from featstore.heads.results import EvalResult, FitResult
from featstore.heads.saved import fit_record, head_files, head_meta, score_parts
from featstore.heads.training_data import TrainingData, load_training_data, training_rows
from featstore.jobs import JobOptions, run_job
from featstore.options import merge_options
from featstore.store.head_files import head_dir, new_head_id, save_head
from featstore.store.layout import StoreLayout, resolve_store

__all__ = ["EvalResult", "FitResult", "evaluate", "fit_head", "fit_options", "package_versions"]

Log = Callable[[str], None]


def fit_options(
    head: HeadConfig | None = None,
    split: SplitOptions | str | None = None,
    job: JobOptions | None = None,
    flat: dict | None = None,
) -> tuple[HeadConfig, SplitOptions, JobOptions]:
    """The checked option objects of `fit_head`: `head`, `split` and `job` (defaults when None),
    with flat keywords `flat` applied on top.

    `flat` may name any `HeadConfig` field but `kind`, any `SplitOptions` field, `store`,
    `emissions` and `country` (not a field of an object also passed:
    `featstore.options.merge_options`); `seed` seeds both the split and the head
    (`random_state`). A string `split` is `SplitOptions(split=...)`.

    Raises
    ------
    InvalidOptionError
        A keyword none of the objects has (the message lists the valid ones), or a bad value.
    """
    flat = dict(flat or {})
    if isinstance(split, str):
        flat["split"], split = split, None
    if "kind" in flat:
        raise InvalidOptionError("kind", "is fit_head's first argument, not an option")
    if "seed" in flat and head is None:
        flat.setdefault("random_state", flat["seed"])  # one seed for the split and the head
    head, split, job = merge_options({HeadConfig: head, SplitOptions: split, JobOptions: job}, flat)
    return head, split, job


@dataclass
class _Plan:
    """What every head of one `fit_head` call shares."""

    layout: StoreLayout
    data: TrainingData
    split: Split
    use_augmented: bool
    n_jobs: int
    job: JobOptions
    log: Log | None


def fit_head(
    kind: str,
    features: Sequence[str],
    *,
    head: HeadConfig | None = None,
    split: SplitOptions | str | None = None,
    use_augmented: bool = False,
    name: str | None = None,
    job: JobOptions | None = None,
    n_jobs: int = 2,
    log: Log | None = None,
    **options,
) -> list[FitResult]:
    """Fit head `kind` (a registered kind, or all) on feature sets `features`.

    Parameters
    ----------
    kind
        svm, logistic, dense, knn (or another registered kind), or all (every kind, one
        comparison table).
    features
        Feature sets `dataset@backbone`, joined row by row through the content digests.
    head
        The head's options (`HeadConfig`, default its defaults; its `kind` is set from
        `kind`). With `all`, `C` goes to the kinds that search a grid of C (logistic) only.
    split
        How the labelled images are split (`SplitOptions`: `auto` (the stored split when the
        features have one, else stratified), `stored`, `stratified` or `hash`, the fractions and
        the seed; see `featstore.data.splits.make_split`). The head's meta records the source.
    use_augmented
        Also train on the augmented views of the training images.
    name
        Head id to use instead of a generated one (with `all`: NAME-KIND).
    job
        Store, energy measurement and country (`JobOptions`).
    n_jobs
        Parallel workers of the scikit-learn heads.
    log
        Called with one line when the stored split was re-mapped (e.g. no test part: val is
        the held-out test set, validation carved from train).
    **options
        Flat keywords instead of (or on top of) the objects: any `HeadConfig` field (`C`,
        `kernel`, `hidden`, `dropout`, `epochs`, `k`, `scale`, ...), any `SplitOptions` field
        (`test_size`, `val_size`, `seed`; `seed` also seeds the head), `store`, `emissions`,
        `country`. See `fit_options`.

    Returns
    -------
    list[FitResult]
        One per head, best validation accuracy first (one for a single kind).

    Raises
    ------
    HeadError
        Unknown kind, a taken `name` (also when another process saves the same name first),
        or too few images for the kind.
    InvalidOptionError
        An option out of range (the error names the parameter).
    DatasetError, UnknownFeatureSetError
        Missing feature set, one class, too few images per class, NaN in features, an empty
        split, `stored` without a stored split, a stored split without a train part. Nothing
        stored is touched.
    """
    specs = kinds_of(kind)
    head, split, job = fit_options(head, split, job, options)
    configs = [head.for_kind(s.name, keep_C=kind != ALL) for s in specs]
    layout = resolve_store(job.store)
    ids = _head_ids(layout, name, configs, several=kind == ALL)
    data = load_training_data(layout, list(features))
    parts = make_split(data.labels, data.split, data.class_names, split, digests=data.digests)
    if parts.note and log is not None:
        log(parts.note)
    plan = _Plan(layout, data, parts, use_augmented, n_jobs, job, log)
    results = [_fit_one(plan, c, head_id) for c, head_id in zip(configs, ids, strict=True)]
    results.sort(key=lambda r: -(r.metrics.get("val", r.metrics.get("test", {})).get("accuracy") or 0))
    if kind == ALL:
        _write_comparison(layout, results)
    return results


def _head_ids(layout: StoreLayout, name: str | None, configs: list[HeadConfig], several: bool) -> list:
    """The head id of each config: `name` (NAME-KIND for several), or None for a generated one.

    Raises
    ------
    HeadError
        A head of that id exists already (checked again, under a claim, when it is saved).
    """
    if not name:
        return [None] * len(configs)
    ids = [f"{name}-{c.kind}" if several else name for c in configs]
    for head_id in ids:
        if head_dir(layout, head_id).exists():
            raise HeadError(f"head {head_id} exists already; choose another --name or remove it")
    return ids


def _fit_one(plan: _Plan, config: HeadConfig, head_id: str | None) -> FitResult:
    """Fit, score and save one head as one `fit-head` job; energy is measured over the fit."""
    spec = get_head_kind(config.kind)
    data, split = plan.data, plan.split
    with run_job("fit-head", plan.job, lazy=True, log=plan.log) as job:
        X, y, n_aug = training_rows(data, split, plan.use_augmented)
        fewest = int(np.bincount(y)[np.unique(y)].min())
        estimator = spec.build(config, FitContext(plan.n_jobs, len(y), fewest))
        job.begin()
        t0 = time.perf_counter()
        spec.fit(estimator, X, y, data.X[split.val], data.labels[split.val])
        fit_s = round(time.perf_counter() - t0, 3)
        em = job.stop_measuring()  # fit-head counts the fit, not scoring and saving
        scored = score_parts(estimator, data, split, config.kind)
        head_id = head_id or new_head_id(config.kind, data.feature_sets)
        meta = head_meta(
            (job.run_id, head_id), config.to_dict(), data, split, scored, fit_s, em, n_aug, plan.use_augmented
        )
        files = head_files(meta, spec.probabilities, estimator, data, split, scored)
        path = save_head(job.layout, head_id, estimator, meta, files)
        job.record = fit_record(job.run_id, head_id, config.kind, data, split, scored, fit_s, n_aug)
    return FitResult(
        head_id, config.kind, data.feature_sets, str(path), config.to_dict(), split.describe(),
        scored.metrics, fit_s, scored.predict_ips, len(split.train), n_aug, em,
    )  # fmt: skip


def _write_comparison(layout: StoreLayout, results: list[FitResult]) -> None:
    """`heads/comparisons/<sets>-<time>.json` and `.md`: one row per head of `fit-head all`."""
    folder = layout.heads / "comparisons"
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{'+'.join(results[0].feature_sets).replace('@', '-')}-{time.strftime('%Y%m%d-%H%M%S')}"
    rows = [r.summary() for r in results]
    lines = [
        "| head | val accuracy | test accuracy | test macro F1 | fit s | head id |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['kind']} | {_pct(r['val_accuracy'])} | {_pct(r['test_accuracy'])} | "
            f"{r['test_macro_f1']:.3f} | {r['fit_seconds']} | {r['head_id']} |"
        )
    write_atomic(folder / f"{stem}.json", json.dumps(rows, indent=2).encode())
    write_atomic(folder / f"{stem}.md", ("\n".join(lines) + "\n").encode())


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"
