"""Saving a fitted head, however it was made, in one sequence: metrics on every part, pictures,
misclassified images, meta.json, the model card, the `FitResult` and the run log's `FitRecord`."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import numpy as np

from featstore.data.splits import Split
from featstore.deps import package_versions
from featstore.emissions import Emissions
from featstore.errors import HeadError
from featstore.heads.metrics import classification_metrics, probabilities_of
from featstore.heads.registry import get_head_kind
from featstore.heads.results import FitResult
from featstore.heads.training_data import TrainingData
from featstore.store.head_files import head_dir, new_head_id, save_head
from featstore.store.layout import StoreLayout
from featstore.store.runlog import FitRecord

#: The most misclassified test images a head keeps (most confident mistakes first).
MAX_MISCLASSIFIED = 100
#: The file beside the model listing them.
MISCLASSIFIED_FILE = "misclassified.json"


@dataclass
class Scored:
    """A head's figures on each part: `metrics` per part, confusion `pictures` (file name ->
    PNG bytes), prediction images/s, and the misclassified test images (see `misclassified`)."""

    metrics: dict
    pictures: dict[str, bytes] = field(default_factory=dict)
    predict_ips: float | None = None
    misclassified: list[dict] = field(default_factory=list)


def misclassified(data: TrainingData, idx: np.ndarray, proba: np.ndarray, limit: int = MAX_MISCLASSIFIED):
    """The rows `idx` whose most probable class (`proba` (n, n_classes)) is not their label, most
    confident first: at most `limit` dicts of path (relative to `root`), root, digest, true and
    predicted class, probability and true_probability."""
    names = data.class_names
    root = data.sources[0].get("data_root") if data.sources else None
    pred = proba.argmax(axis=1)
    truth = data.labels[idx]
    wrong = np.flatnonzero(pred != truth)
    wrong = wrong[np.argsort(-proba[wrong, pred[wrong]], kind="stable")][:limit]
    return [
        {
            "path": data.paths[idx[j]],
            "root": root,
            "digest": data.digests[idx[j]],
            "true": names[truth[j]],
            "predicted": names[pred[j]],
            "probability": round(float(proba[j, pred[j]]), 4),
            "true_probability": round(float(proba[j, truth[j]]), 4),
        }
        for j in wrong
    ]


def score_parts(estimator, data: TrainingData, split: Split, kind: str) -> Scored:
    """Metrics of every non-empty part, confusion pictures of the held-out ones, predictions per
    second (of the test part, else the first part scored) and the misclassified test images."""
    from featstore.plots import confusion_png

    scored = Scored({})
    for part in ("train", "val", "test"):
        idx = getattr(split, part)
        if not len(idx):
            continue
        t1 = time.perf_counter()
        proba = probabilities_of(estimator, data.X, idx, len(data.class_names))
        dt = time.perf_counter() - t1
        if part == "test" or scored.predict_ips is None:
            scored.predict_ips = round(len(idx) / dt, 1) if dt > 0 else None
        scored.metrics[part] = classification_metrics(data.labels[idx], proba, data.class_names)
        if part == "test":
            scored.misclassified = misclassified(data, idx, proba)
        if part != "train":  # plain training images; the picture is for held-out parts only
            title = f"{kind} on {data.feature_sets[0]} ({part})"
            scored.pictures[f"confusion_{part}.png"] = confusion_png(
                scored.metrics[part]["confusion_matrix"], data.class_names, title
            )
    return scored


def head_meta(
    ids: tuple[str, str],
    config: dict,
    data: TrainingData,
    split: Split,
    scored: Scored,
    fit_s: float,
    em: Emissions,
    n_aug: int = 0,
    use_augmented: bool = False,
) -> dict:
    """A head's meta.json content; `ids` is (run id, head id)."""
    run_id, head_id = ids
    versions = package_versions()
    return {
        "head_id": head_id,
        "run_id": run_id,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": config,
        "feature_sets": data.feature_sets,
        "sources": data.sources,
        "class_names": data.class_names,
        "split": split.describe(),
        "use_augmented": use_augmented,
        "n_augmented_train": n_aug,
        "metrics": scored.metrics,
        "fit_seconds": fit_s,
        "predict_images_per_s": scored.predict_ips,
        "emissions": em.to_dict(),
        "versions": versions,
        "featstore_version": versions["featstore"],
    }


def head_files(meta: dict, probabilities: str, estimator, data, split, scored: Scored) -> dict[str, bytes]:
    """The files saved beside the model: pictures, metrics, the split's digests, the misclassified
    test images, the model card and (when the head has one) its training history."""
    from featstore.cards import model_card

    split_rows = {p: [data.digests[i] for i in getattr(split, p)] for p in ("train", "val", "test")}
    files = {
        **scored.pictures,
        "metrics.json": json.dumps(scored.metrics, indent=2).encode(),
        "split.json": json.dumps(split_rows).encode(),
        MISCLASSIFIED_FILE: json.dumps(scored.misclassified, indent=1).encode(),
        "card.md": model_card(meta, probabilities=probabilities).encode(),
    }
    if getattr(estimator, "history_", None):
        files["history.json"] = json.dumps(estimator.history_).encode()
    return files


def split_rows(layout: StoreLayout, head: str, use: str) -> dict:
    """The content digests of each part head `head` was fitted and scored on (its split.json,
    {"train"|"val"|"test": [digest, ...]}); HeadError saying it cannot be put to `use` when the
    file is missing or unreadable."""
    try:
        return json.loads((head_dir(layout, head) / "split.json").read_text())
    except (OSError, ValueError) as err:
        raise HeadError(f"head {head} has no readable split.json ({err}); {use}") from err


def fit_record(
    run_id: str, head_id: str, kind: str, data: TrainingData, split: Split, scored: Scored, fit_s, n_aug=0
) -> FitRecord:
    """The run log's record of a fitted head (command `fit-head`)."""
    metrics = scored.metrics
    return FitRecord(
        run_id,
        "fit-head",
        dataset=data.feature_sets[0].split("@", 1)[0],
        seconds=fit_s,
        images_per_s=scored.predict_ips,
        counts={
            **{f"n_{p}": len(getattr(split, p)) for p in ("train", "val", "test")},
            "n_augmented_train": n_aug,
        },
        head_id=head_id,
        kind=kind,
        feature_sets=data.feature_sets,
        backbone_digests=[s["backbone_digest"] for s in data.sources],
        metrics={p: {k: metrics[p][k] for k in ("accuracy", "macro_f1")} for p in metrics},
        split=split.describe(),
    )


@dataclass
class Fitted:
    """A fitted head to save: the estimator, its config (`HeadParams.to_dict()`), the rows and
    split it was fitted on, fit seconds and energy, augmented rows, and `extra` meta."""

    estimator: object
    config: dict
    data: TrainingData
    split: Split
    fit_seconds: float
    emissions: Emissions
    n_augmented: int = 0
    use_augmented: bool = False
    extra: dict = field(default_factory=dict)


def save_fitted(
    layout: StoreLayout, run_id: str, head_id: str | None, fitted: Fitted
) -> tuple[FitResult, FitRecord]:
    """Score `fitted` on every part of its split and save it as head `head_id` (None: generated)
    of run `run_id`; return its FitResult and FitRecord. HeadError when the id was taken."""
    kind = get_head_kind(fitted.config["kind"])
    data, split, fit_s = fitted.data, fitted.split, fitted.fit_seconds
    scored = score_parts(fitted.estimator, data, split, kind.name)
    head_id = head_id or new_head_id(kind.name, data.feature_sets)
    meta = head_meta(
        (run_id, head_id), fitted.config, data, split, scored, fit_s, fitted.emissions,
        fitted.n_augmented, fitted.use_augmented,
    )  # fmt: skip
    meta.update(fitted.extra)
    files = head_files(meta, kind.probabilities, fitted.estimator, data, split, scored)
    path = save_head(layout, head_id, fitted.estimator, meta, files)
    result = FitResult(
        head_id, kind.name, data.feature_sets, str(path), fitted.config, split.describe(), scored.metrics,
        fit_s, scored.predict_ips, len(split.train), fitted.n_augmented, fitted.emissions,
    )  # fmt: skip
    return result, fit_record(run_id, head_id, kind.name, data, split, scored, fit_s, fitted.n_augmented)
