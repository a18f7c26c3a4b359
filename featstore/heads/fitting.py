"""`featstore fit-head` and `featstore evaluate`: heads trained and scored on cached features.

Owns the loop a user repeats: load one or more feature sets (joined row by row through the
content digests), split, fit, score, save. The heads themselves live in `heads`, the split in
`splits`, metrics in `metrics`, files in `headstore`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from featstore.data.splits import Split, make_split
from featstore.emissions import Emissions, track_emissions
from featstore.errors import DatasetError, HeadError, StoreMismatchError
from featstore.heads.kinds import HEAD_KINDS, HeadConfig, build_head
from featstore.heads.metrics import classification_metrics
from featstore.store.featuresets import open_feature_set
from featstore.store.head_files import head_dir, load_head, new_head_id, save_head
from featstore.store.layout import StoreLayout, resolve_store
from featstore.store.runlog import new_run_id, record_run


@dataclass
class TrainingData:
    """Features of the plain rows (view 0) of one or more joined feature sets, and their views."""

    X: np.ndarray
    labels: np.ndarray
    digests: list[str]
    paths: list[str]
    split: list[str]
    class_names: list[str]
    sources: list[dict]
    aug_X: np.ndarray
    aug_labels: np.ndarray
    aug_digests: list[str]
    n_dropped_in_join: int = 0


def _views(rows) -> np.ndarray:
    views = getattr(rows, "views", None)
    if views is None:
        views = getattr(rows, "view", None)
    return np.zeros(len(rows), np.int16) if views is None else np.asarray(views)


def _read(layout: StoreLayout, name: str):
    with open_feature_set(layout, name) as r:
        rows = r.rows()
        X = r.read_features().astype(np.float32)
        a = r.attrs
        source = {
            "feature_set": name,
            "backbone": a.get("backbone"),
            "backbone_digest": a.get("backbone_digest"),
            "precision": a.get("precision", "fp32"),
            "n_features": r.n_features,
            "input_size": a.get("input_size"),
            "resize": a.get("resize"),
        }
        class_names = r.class_names
    bad = ~np.isfinite(X).all(axis=1)
    if bad.any():
        raise DatasetError(
            f"feature set {name} has NaN or infinite features in {int(bad.sum())} rows "
            f"(e.g. {rows.paths[int(np.argmax(bad))]}); re-extract it with --force"
        )
    return rows, X, source, class_names


def load_training_data(layout: StoreLayout, names: list[str]) -> TrainingData:
    """Load feature sets `names` and join them by content digest (columns concatenated in order).

    Raises
    ------
    UnknownFeatureSetError, DatasetError
        A set is missing, holds NaN, has other classes than the first, or shares no image.
    """
    if not names:
        raise DatasetError("give at least one --features dataset@backbone")
    if len(set(names)) != len(names):
        raise DatasetError(f"--features lists a feature set twice: {names}")
    rows, X, source, class_names = _read(layout, names[0])
    views = _views(rows)
    keys = [(d, int(v)) for d, v in zip(rows.digests, views, strict=True)]
    blocks, sources = [X], [source]
    keep = np.ones(len(keys), bool)
    for name in names[1:]:
        r2, X2, s2, c2 = _read(layout, name)
        if c2 != class_names:
            raise DatasetError(
                f"{name} has classes {c2}, but {names[0]} has {class_names}; join sets of one dataset"
            )
        where = {(d, int(v)): i for i, (d, v) in enumerate(zip(r2.digests, _views(r2), strict=True))}
        idx = np.array([where.get(k, -1) for k in keys])
        keep &= idx >= 0
        block = np.zeros((len(keys), X2.shape[1]), np.float32)
        block[idx >= 0] = X2[idx[idx >= 0]]
        blocks.append(block)
        sources.append(s2)
    if not keep.any():
        raise DatasetError(f"the feature sets {', '.join(names)} share no image (no common content digest)")
    Xall = np.hstack(blocks)[keep]
    labels = np.asarray(rows.labels)[keep]
    plain = views[keep] == 0
    digests = [d for d, k in zip(rows.digests, keep, strict=True) if k]
    return TrainingData(
        X=Xall[plain],
        labels=labels[plain],
        digests=[d for d, p in zip(digests, plain, strict=True) if p],
        paths=[p for p, k, v in zip(rows.paths, keep, views, strict=True) if k and v == 0],
        split=[s for s, k, v in zip(rows.split, keep, views, strict=True) if k and v == 0],
        class_names=class_names,
        sources=sources,
        aug_X=Xall[~plain],
        aug_labels=labels[~plain],
        aug_digests=[d for d, p in zip(digests, plain, strict=True) if not p],
        n_dropped_in_join=int((~keep).sum()),
    )


def _proba(estimator, X: np.ndarray, n_classes: int) -> np.ndarray:
    """Class probabilities in the order of all classes, (n, n_classes)."""
    p = estimator.predict_proba(X)
    out = np.zeros((len(X), n_classes))
    out[:, np.asarray(estimator.classes_, dtype=int)] = p
    return out


@dataclass
class FitResult:
    """One fitted head: where it is and how it scored."""

    head_id: str
    kind: str
    feature_sets: list[str]
    path: str
    config: dict
    split: dict
    metrics: dict
    fit_seconds: float
    predict_images_per_s: float | None
    n_train: int
    n_augmented_train: int
    emissions: Emissions = field(default_factory=Emissions)

    def to_dict(self) -> dict:
        """Return a JSON-ready dict."""
        return asdict(self)

    def summary(self) -> dict:
        """One row of a comparison table."""
        train, val, test = (self.metrics.get(p, {}) for p in ("train", "val", "test"))
        return {
            "kind": self.kind,
            "head_id": self.head_id,
            "train_accuracy": train.get("accuracy"),
            "val_accuracy": val.get("accuracy"),
            "test_accuracy": test.get("accuracy"),
            "test_macro_f1": test.get("macro_f1"),
            "fit_seconds": self.fit_seconds,
            "energy_kwh": self.emissions.energy_kwh,
            "co2_kg": self.emissions.co2_kg,
        }


def package_versions() -> dict:
    """Versions of featstore and of the packages a trained model depends on."""
    import importlib.metadata as md

    from featstore import __version__

    out = {"featstore": __version__}
    for dist in ("scikit-learn", "numpy", "keras", "tensorflow"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return out


def _fit_one(
    layout,
    data: TrainingData,
    split: Split,
    config: HeadConfig,
    use_augmented: bool,
    emissions: bool,
    country: str | None,
    n_jobs: int,
    head_id: str | None = None,
) -> FitResult:
    from featstore.cards import model_card
    from featstore.plots import confusion_png

    names = [s["feature_set"] for s in data.sources]
    Xtr, ytr = data.X[split.train], data.labels[split.train]
    n_aug = 0
    if use_augmented:
        train_digests = {data.digests[i] for i in split.train}
        sel = np.array([d in train_digests for d in data.aug_digests], bool)
        if not sel.any():
            raise DatasetError(
                f"--use-augmented: {names[0]} has no augmented views of training images; "
                "extract with --augment flip,rotate,zoom --copies N first"
            )
        Xtr = np.vstack([Xtr, data.aug_X[sel]])
        ytr = np.concatenate([ytr, data.aug_labels[sel]])
        n_aug = int(sel.sum())
    fewest = int(np.bincount(ytr)[np.unique(ytr)].min())
    estimator = build_head(config, n_jobs=n_jobs, n_train=len(ytr), min_per_class=fewest)
    run_id = new_run_id("fit-head")
    with track_emissions(emissions, country, layout.emissions) as tracker:
        t0 = time.perf_counter()
        if config.kind == "dense":
            estimator.fit(Xtr, ytr, data.X[split.val], data.labels[split.val])
        else:
            estimator.fit(Xtr, ytr)
        fit_s = time.perf_counter() - t0
    metrics, pictures = {}, {}
    predict_ips = None
    n_classes = len(data.class_names)
    for part in ("train", "val", "test"):
        idx = getattr(split, part)
        if not len(idx):
            continue
        t1 = time.perf_counter()
        proba = _proba(estimator, data.X[idx], n_classes)
        dt = time.perf_counter() - t1
        if part == "test" or predict_ips is None:
            predict_ips = round(len(idx) / dt, 1) if dt > 0 else None
        metrics[part] = classification_metrics(data.labels[idx], proba, data.class_names)
        if part == "train":  # plain training images; the picture is for held-out parts only
            continue
        pictures[f"confusion_{part}.png"] = confusion_png(
            metrics[part]["confusion_matrix"], data.class_names, f"{config.kind} on {names[0]} ({part})"
        )
    head_id = head_id or new_head_id(config.kind, names)
    em = tracker.result
    versions = package_versions()
    meta = {
        "head_id": head_id,
        "run_id": run_id,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": config.to_dict(),
        "feature_sets": names,
        "sources": data.sources,
        "class_names": data.class_names,
        "split": split.describe(),
        "use_augmented": use_augmented,
        "n_augmented_train": n_aug,
        "metrics": metrics,
        "fit_seconds": round(fit_s, 3),
        "predict_images_per_s": predict_ips,
        "emissions": em.to_dict(),
        "versions": versions,
        "featstore_version": versions["featstore"],
    }
    split_rows = {p: [data.digests[i] for i in getattr(split, p)] for p in ("train", "val", "test")}
    extra = {
        **pictures,
        "metrics.json": json.dumps(metrics, indent=2).encode(),
        "split.json": json.dumps(split_rows).encode(),
        "card.md": model_card(meta).encode(),
    }
    if getattr(estimator, "history_", None):
        extra["history.json"] = json.dumps(estimator.history_).encode()
    path = save_head(layout, head_id, estimator, meta, extra)
    result = FitResult(
        head_id,
        config.kind,
        names,
        str(path),
        config.to_dict(),
        split.describe(),
        metrics,
        round(fit_s, 3),
        predict_ips,
        len(split.train),
        n_aug,
        em,
    )
    record_run(
        layout,
        {
            "id": run_id,
            "command": "fit-head",
            "head_id": head_id,
            "kind": config.kind,
            "feature_sets": names,
            "backbone_digests": [s["backbone_digest"] for s in data.sources],
            "metrics": {p: {k: metrics[p][k] for k in ("accuracy", "macro_f1")} for p in metrics},
            "split": split.describe(),
            "counts": {
                "n_train": len(split.train),
                "n_val": len(split.val),
                "n_test": len(split.test),
                "n_augmented_train": n_aug,
            },
            "seconds": round(fit_s, 3),
            "images_per_s": predict_ips,
            "energy_kwh": em.energy_kwh,
            "co2_kg": em.co2_kg,
            "emissions": em.to_dict(),
        },
    )
    return result


def fit_head(
    kind: str,
    features: list[str],
    *,
    store: str | None = None,
    C: list[float] | None = None,
    kernel: str = "rbf",
    hidden: list[int] | None = None,
    dropout: float = 0.5,
    epochs: int = 30,
    k: int = 10,
    scale: str | None = None,
    test_size: float = 0.2,
    val_size: float = 0.1,
    seed: int = 0,
    split: str = "auto",
    use_augmented: bool = False,
    name: str | None = None,
    emissions: bool = True,
    country: str | None = None,
    n_jobs: int = 2,
    log: Callable[[str], None] | None = None,
) -> list[FitResult]:
    """Fit head `kind` (svm, logistic, dense, knn, or all) on feature sets `features`.

    Parameters
    ----------
    kind
        svm, logistic, dense, knn, or all (every head, one comparison table).
    features
        Feature sets `dataset@backbone`, joined row by row through the content digests.
    test_size, val_size, seed
        Fractions of the stratified and hash splits (`val_size` also for a validation part
        carved from a stored train part), and the seed of the split and of the head.
    split
        `auto` (the stored split when the features have one, else stratified), `stored`,
        `stratified` or `hash` (each image's part from its content digest); see
        `featstore.data.splits.make_split`. The head's meta records the source used.
    log
        Called with one line when the stored split was re-mapped (e.g. no test part: val is
        the held-out test set, validation carved from train).

    Returns
    -------
    list[FitResult]
        One per head, best validation accuracy first (one for a single kind).

    Raises
    ------
    HeadError, DatasetError, UnknownFeatureSetError
        Unknown head, bad options, missing feature set, one class, too few images per class,
        NaN in features, an empty split, `--split stored` without a stored split, a stored
        split without a train part. Nothing stored is touched.
    """
    log = log or (lambda msg: None)
    kinds = list(HEAD_KINDS) if kind == "all" else [kind]
    configs = [
        HeadConfig(
            kind=kd,
            scale=scale,
            C=None if C is None or (kind == "all" and kd != "logistic") else list(C),
            kernel=kernel,
            hidden=list(hidden or [256]),
            dropout=dropout,
            epochs=epochs,
            k=k,
            random_state=seed,
        ).check()
        for kd in kinds
    ]
    layout = resolve_store(store)
    ids = [None] * len(configs)
    if name:
        ids = [name if kind != "all" else f"{name}-{c.kind}" for c in configs]
        for head_id in ids:
            if head_dir(layout, head_id).exists():
                raise HeadError(f"head {head_id} exists already; choose another --name or remove it")
    data = load_training_data(layout, list(features))
    parts = make_split(
        data.labels,
        data.split,
        data.class_names,
        test_size,
        val_size,
        seed,
        source=split,
        digests=data.digests,
    )
    if parts.note:
        log(parts.note)
    results = [
        _fit_one(layout, data, parts, c, use_augmented, emissions, country, n_jobs, head_id)
        for c, head_id in zip(configs, ids, strict=True)
    ]
    results.sort(key=lambda r: -(r.metrics.get("val", r.metrics.get("test", {})).get("accuracy") or 0))
    if kind == "all":
        _write_comparison(layout, results)
    return results


def _write_comparison(layout: StoreLayout, results: list[FitResult]) -> None:
    folder = layout.heads / "comparisons"
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{'+'.join(results[0].feature_sets).replace('@', '-')}-{time.strftime('%Y%m%d-%H%M%S')}"
    rows = [r.summary() for r in results]
    (folder / f"{stem}.json").write_text(json.dumps(rows, indent=2))
    lines = [
        "| head | val accuracy | test accuracy | test macro F1 | fit s | head id |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        fmt = lambda x: "-" if x is None else f"{100 * x:.1f} %"  # noqa: E731
        lines.append(
            f"| {r['kind']} | {fmt(r['val_accuracy'])} | {fmt(r['test_accuracy'])} | "
            f"{r['test_macro_f1']:.3f} | {r['fit_seconds']} | {r['head_id']} |"
        )
    (folder / f"{stem}.md").write_text("\n".join(lines) + "\n")


@dataclass
class EvalResult:
    """A head scored on a feature set; `run_id` is its line in the run log."""

    head_id: str
    feature_sets: list[str]
    metrics: dict
    n_rows: int
    n_skipped: int
    path: str
    run_id: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict:
        """Return a JSON-ready dict."""
        return asdict(self)


def evaluate(head: str, features: list[str], *, store: str | None = None) -> EvalResult:
    """Score head `head` on every labelled row of feature sets `features` (joined like at fit).

    The metrics and confusion matrix are saved under the head's `evaluations/` folder, and the
    run is logged to `store/runs.jsonl` (command `evaluate`: head id, feature sets, accuracy and
    macro F1 of the evaluated rows, seconds), so `featstore report` shows it as a row of the
    evaluated feature set's dataset.

    Parameters
    ----------
    head
        Head id (see `featstore heads ls`).
    features
        Feature sets `dataset@backbone`, as many as the head was trained on, in that order.

    Returns
    -------
    EvalResult
        Metrics of the labelled rows of a class the head knows, counts, the metrics file and
        the run id.

    Raises
    ------
    StoreMismatchError
        The features come from another backbone export than the head was trained on.
    DatasetError
        No row has a class the head knows.
    """
    from featstore.plots import confusion_png

    layout = resolve_store(store)
    t0 = time.perf_counter()
    estimator, meta = load_head(layout, head)
    features = list(features)
    if len(features) != len(meta["sources"]):
        raise StoreMismatchError(
            f"head {head} was trained on {len(meta['sources'])} feature set(s) "
            f"({' + '.join(meta['feature_sets'])}); give as many --features, in that order"
        )
    data = load_training_data(layout, features)
    for want, got in zip(meta["sources"], data.sources, strict=True):
        if want["backbone_digest"] != got["backbone_digest"]:
            wp, gp = want.get("precision", "fp32"), got.get("precision", "fp32")
            precisions = wp != gp
            raise StoreMismatchError(
                f"head {head} was trained on {wp + ' ' if precisions else ''}features of {want['backbone']} "
                f"(digest {want['backbone_digest'][:12]}), but {got['feature_set']} holds "
                f"{gp + ' ' if precisions else ''}features of {got['backbone']} (digest "
                f"{str(got['backbone_digest'])[:12]}); extract with the same backbone"
                + (f" and --precision {wp}" if precisions else "")
            )
    head_classes = meta["class_names"]
    index = {c: i for i, c in enumerate(head_classes)}
    mapped = np.array([index.get(data.class_names[y], -1) if y >= 0 else -1 for y in data.labels])
    keep = mapped >= 0
    if not keep.any():
        raise DatasetError(f"no row of {features[0]} has a class the head knows ({', '.join(head_classes)})")
    t1 = time.perf_counter()
    proba = _proba(estimator, data.X[keep], len(head_classes))
    predict_s = time.perf_counter() - t1
    metrics = classification_metrics(mapped[keep], proba, head_classes)
    out = head_dir(layout, head) / "evaluations"
    out.mkdir(exist_ok=True)
    stem = f"{'+'.join(features).replace('@', '-')}-{time.strftime('%Y%m%d-%H%M%S')}"
    (out / f"{stem}.json").write_text(json.dumps(metrics, indent=2))
    (out / f"{stem}.png").write_bytes(
        confusion_png(metrics["confusion_matrix"], head_classes, f"{head} on {features[0]}")
    )
    seconds = round(time.perf_counter() - t0, 3)
    n_rows = int(keep.sum())
    run_id = new_run_id("evaluate")
    record_run(
        layout,
        {
            "id": run_id,
            "command": "evaluate",
            "head_id": head,
            "kind": meta.get("config", {}).get("kind"),
            "dataset": features[0].split("@", 1)[0],
            "feature_sets": features,
            "head_feature_sets": meta.get("feature_sets"),
            "backbone_digests": [s["backbone_digest"] for s in data.sources],
            "metrics": {
                k: metrics[k] for k in ("accuracy", "balanced_accuracy", "macro_f1", "log_loss", "n")
            },
            "counts": {"n_rows": n_rows, "n_skipped": int((~keep).sum())},
            "seconds": seconds,
            "images_per_s": round(n_rows / predict_s, 1) if predict_s > 0 else None,
            "path": str(out / f"{stem}.json"),
        },
    )
    return EvalResult(
        head, features, metrics, n_rows, int((~keep).sum()), str(out / f"{stem}.json"), run_id, seconds
    )
