"""`featstore evaluate`: a saved head scored on the labelled rows of other feature sets of the same
backbone export; rows of classes it does not know are skipped."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from featstore.errors import DatasetError, StoreMismatchError
from featstore.files import write_atomic
from featstore.heads.metrics import classification_metrics, probabilities_of
from featstore.heads.results import EvalResult
from featstore.heads.training_data import TrainingData, close_features, load_for_scoring
from featstore.jobs import run_job
from featstore.options import JobOptions
from featstore.store.head_files import head_dir, load_head
from featstore.store.layout import StoreLayout
from featstore.store.runlog import EvaluateRecord


def evaluate(
    head: str, features: Sequence[str], *, job: JobOptions = JobOptions(emissions=False)
) -> EvalResult:
    """Score head `head` on every labelled row of feature sets `features` (joined as at fit).

    The metrics and confusion matrix go to the head's `evaluations/` folder and the run to the
    run log, so `featstore report` shows it under the evaluated dataset.

    Parameters
    ----------
    head
        Head id (see `featstore heads ls`).
    features
        Feature sets `dataset@backbone`, as many as the head was trained on, in that order.
    job
        Store and energy; energy is off by default (scoring takes a fraction of a second).

    Returns
    -------
    EvalResult
        Metrics of the rows of classes the head knows, counts, files, run id and seconds.

    Raises
    ------
    StoreMismatchError
        Another number of feature sets, or features of another backbone export or precision.
    DatasetError
        No row has a class the head knows.
    """
    features = list(features)
    with run_job("evaluate", job, lazy=True) as run:
        estimator, meta = load_head(run.layout, head)
        data = _checked_data(run.layout, head, meta, features)
        head_classes = meta["class_names"]
        mapped = _head_labels(data, head_classes)
        keep = mapped >= 0
        try:
            if not keep.any():
                raise DatasetError(
                    f"no row of {features[0]} has a class the head knows ({', '.join(head_classes)})"
                )
            run.begin()
            t1 = time.perf_counter()
            proba = probabilities_of(estimator, data.X, np.flatnonzero(keep), len(head_classes))
            predict_s = time.perf_counter() - t1
        finally:
            close_features(data)
        metrics = classification_metrics(mapped[keep], proba, head_classes)
        path = _write_evaluation(run.layout, head, features, metrics, head_classes)
        n_rows, n_skipped = int(keep.sum()), int((~keep).sum())
        run.record = EvaluateRecord(
            run.run_id,
            "evaluate",
            dataset=features[0].split("@", 1)[0],
            images_per_s=round(n_rows / predict_s, 1) if predict_s > 0 else None,
            counts={"n_rows": n_rows, "n_skipped": n_skipped},
            head_id=head,
            kind=meta.get("config", {}).get("kind"),
            feature_sets=features,
            backbone_digests=[s["backbone_digest"] for s in data.sources],
            metrics={
                k: metrics[k] for k in ("accuracy", "balanced_accuracy", "macro_f1", "log_loss", "ece", "n")
            },
            head_feature_sets=meta.get("feature_sets"),
            path=str(path),
        )
    return EvalResult(head, features, metrics, n_rows, n_skipped, str(path), run.run_id, run.seconds)


def _checked_data(layout: StoreLayout, head: str, meta: dict, features: list[str]) -> TrainingData:
    """Load `features` after checking they match the head's: as many sets, the same backbones (one
    set larger than a head reads into memory stays in its shards: close it with `close_features`)."""
    if len(features) != len(meta["sources"]):
        raise StoreMismatchError(
            f"head {head} was trained on {len(meta['sources'])} feature set(s) "
            f"({' + '.join(meta['feature_sets'])}); give as many --features, in that order"
        )
    data = load_for_scoring(layout, features)
    for want, got in zip(meta["sources"], data.sources, strict=True):
        if want["backbone_digest"] != got["backbone_digest"]:
            close_features(data)
            raise StoreMismatchError(_mismatch(head, want, got))
    return data


def _mismatch(head: str, want: dict, got: dict) -> str:
    wp, gp = want.get("precision", "fp32"), got.get("precision", "fp32")
    precisions = wp != gp
    return (
        f"head {head} was trained on {wp + ' ' if precisions else ''}features of {want['backbone']} "
        f"(digest {want['backbone_digest'][:12]}), but {got['feature_set']} holds "
        f"{gp + ' ' if precisions else ''}features of {got['backbone']} (digest "
        f"{str(got['backbone_digest'])[:12]}); extract with the same backbone"
        + (f" and --precision {wp}" if precisions else "")
    )


def _head_labels(data: TrainingData, head_classes: list[str]) -> np.ndarray:
    """Each row's label as the head's class index; -1 for unlabelled rows and unknown classes."""
    index = {c: i for i, c in enumerate(head_classes)}
    return np.array([index.get(data.class_names[y], -1) if y >= 0 else -1 for y in data.labels], dtype=int)


def _write_evaluation(layout: StoreLayout, head: str, features: list[str], metrics: dict, classes) -> Path:
    """Write `evaluations/<sets>-<time>.json` and `.png` in the head's folder; return the .json path."""
    from featstore.plots import confusion_png

    out = head_dir(layout, head) / "evaluations"
    out.mkdir(exist_ok=True)
    stem = f"{'+'.join(features).replace('@', '-')}-{time.strftime('%Y%m%d-%H%M%S')}"
    png = confusion_png(metrics["confusion_matrix"], classes, f"{head} on {features[0]}")
    write_atomic(out / f"{stem}.json", json.dumps(metrics, indent=2).encode())
    write_atomic(out / f"{stem}.png", png)
    return out / f"{stem}.json"
