"""`featstore inspect labels`: likely label errors, ranked: cleanlab's confident learning on
cross-validated probabilities, lowest self-confidence first."""

from __future__ import annotations

import numpy as np

from featstore.deps import require
from featstore.errors import DatasetError
from featstore.inspect.crossval import CrossValPredictions, check_cross_validation, cross_val_proba
from featstore.inspect.options import CrossValOptions
from featstore.inspect.results import Inspection, Timer, inspect_record, write_inspection
from featstore.inspect.sets import InspectSet, open_set, raw_features
from featstore.jobs import run_job
from featstore.options import JobOptions
from featstore.reporter import SILENT, Reporter
from featstore.store.layout import resolve_store

COLUMNS = ["rank", "label", "predicted", "p_label", "p_predicted", "quality", "part", "path"]
METHOD = "cleanlab.filter.find_label_issues (prune_by_noise_rate), ranked by self-confidence"


def labelled(data: InspectSet, what: str) -> np.ndarray:
    """Positions of the labelled rows of `data`; DatasetError (naming `what`) when there are none."""
    rows = np.flatnonzero(data.labels >= 0)
    if not len(rows):
        raise DatasetError(
            f"{data.name} has no labels, and {what} needs labelled images (extract class folders or a "
            "manifest with labels); inspect duplicates, leaks --against and map work without"
        )
    return rows


def find_label_issues(
    features: str,
    *,
    crossval: CrossValOptions = CrossValOptions(),
    job: JobOptions = JobOptions(),
    reporter: Reporter = SILENT,
) -> Inspection:
    """Rank the labelled images of feature set `features` whose label is likely wrong, by the
    cross-validated head `crossval`.

    Returns
    -------
    Inspection
        `items`: one row per likely error, most likely first (given and predicted class, the
        cross-validated probability of each, label quality, part, path); `summary`: images,
        issues, cross-validated accuracy, issues per class.

    Raises
    ------
    MissingDependencyError
        cleanlab is not installed.
    InvalidOptionError
        Bad options, or a head kind that cannot be cross-validated.
    UnknownFeatureSetError, DatasetError
        A missing or empty set, no labels, one class, a class with fewer images than folds.
    """
    crossval = crossval.check()
    cleanlab_filter = require("cleanlab.filter", extra="inspect", package="cleanlab")
    cleanlab_rank = require("cleanlab.rank", extra="inspect", package="cleanlab")
    layout = resolve_store(job.store)
    data = open_set(layout, features)
    rows = labelled(data, "inspect labels")
    check_cross_validation(data.labels[rows], data.class_names, crossval)
    with run_job("inspect", job, lazy=True, reporter=reporter) as run:
        timer = Timer()
        sub = data.subset(rows)
        X = raw_features(layout, sub)
        run.begin()
        cv = cross_val_proba(X, sub.labels, sub.digests, data.class_names, crossval)
        del X
        issues = cleanlab_filter.find_label_issues(
            labels=cv.y, pred_probs=cv.proba, return_indices_ranked_by="self_confidence", n_jobs=1
        )
        quality = cleanlab_rank.get_label_quality_scores(cv.y, cv.proba)
        emissions = run.stop_measuring()
        items = _items(sub, cv, np.asarray(issues, dtype=np.int64), quality)
        summary = _summary(data, sub, cv, items, crossval)
        notes = []
        if len(rows) < len(data):
            notes.append(f"{len(data) - len(rows)} unlabelled image(s) left out")
        result = Inspection(
            "labels", run.run_id, [features], data.dataset, crossval.to_dict(), summary, COLUMNS,
            items, [], notes, emissions=emissions.to_dict(),
        )  # fmt: skip
        result.seconds = timer.seconds()
        write_inspection(layout, result)
        counts = {"n_images": len(rows), "n_issues": len(items)}
        run.record = inspect_record(result, [data.backbone_digest], counts)
    return result


def _items(sub: InspectSet, cv: CrossValPredictions, issues: np.ndarray, quality: np.ndarray) -> list[dict]:
    items = []
    best = np.argmax(cv.proba, axis=1)
    for rank, i in enumerate(issues, start=1):
        items.append(
            {
                "rank": rank,
                "label": sub.label_name(i),
                "predicted": sub.class_names[int(cv.classes[best[i]])],
                "p_label": round(float(cv.proba[i, cv.y[i]]), 6),
                "p_predicted": round(float(cv.proba[i, best[i]]), 6),
                "quality": round(float(quality[i]), 6),
                "part": sub.split[i] or None,
                "path": sub.paths[i],
                "digest": sub.digests[i],
            }
        )
    return items


def _summary(data: InspectSet, sub: InspectSet, cv: CrossValPredictions, items: list[dict], options) -> dict:
    per_class = {}
    issue_counts: dict[str, int] = {}
    for item in items:
        issue_counts[item["label"]] = issue_counts.get(item["label"], 0) + 1
    for c, n in zip(*np.unique(sub.labels, return_counts=True), strict=True):
        name = data.class_names[int(c)]
        per_class[name] = {"n_images": int(n), "n_issues": issue_counts.get(name, 0)}
    return {
        "n_images": len(data),
        "n_labelled": len(sub),
        "n_issues": len(items),
        "fraction": round(len(items) / len(sub), 6),
        "cv_accuracy": round(cv.accuracy, 6),
        "head": options.head,
        "folds": options.folds,
        "method": METHOD,
        "per_class": per_class,
    }
