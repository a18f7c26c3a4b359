"""`featstore inspect leaks`: held-out images with a near duplicate among the images a head trains
on (the parts of `fit-head`'s split, or every image against another feature set)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from featstore.data.options import SplitOptions
from featstore.data.splits import make_split
from featstore.errors import DatasetError, InvalidOptionError, StoreMismatchError
from featstore.inspect.options import SimilarityOptions
from featstore.inspect.results import Inspection, Timer, inspect_record, write_inspection
from featstore.inspect.sets import InspectSet, open_set, unit_features
from featstore.inspect.similarity import Nearest, PairStats, iter_pairs, take_rows
from featstore.jobs import run_job
from featstore.options import JobOptions
from featstore.reporter import SILENT, Reporter
from featstore.store.layout import StoreLayout, resolve_store

COLUMNS = ["rank", "part", "path", "label", "similarity", "other_part", "other_path", "other_label", "exact"]
#: Which parts each held-out part is compared with.
COMPARED = {"val": ("train",), "test": ("train", "val")}


@dataclass
class _Side:
    """One side of a comparison: the set, its rows taking part, and their part names."""

    data: InspectSet
    rows: np.ndarray
    parts: np.ndarray


def find_leaks(
    features: str,
    against: str | None = None,
    *,
    similarity: SimilarityOptions = SimilarityOptions(),
    split: SplitOptions = SplitOptions(),
    job: JobOptions = JobOptions(),
    reporter: Reporter = SILENT,
) -> Inspection:
    """Find held-out images of feature set `features` with a near duplicate among training images.

    The parts are those of `split` (as `fit-head --split` makes them); with `against` (another
    feature set of the same backbone export) every image is compared with every image of it.
    `similarity.threshold` is the cosine in (0, 1].

    Returns
    -------
    Inspection
        `items`: one row per leaked image (part, path, label, its most similar image on the
        other side, their similarity, identical or not), most similar first;
        `summary["parts"]`: per held-out part, images compared and leaked.

    Raises
    ------
    InvalidOptionError
        A threshold outside (0, 1], bad split options, `against` naming `features` itself.
    UnknownFeatureSetError, DatasetError
        A missing or empty set; no split can be made.
    StoreMismatchError
        `against` comes from another backbone export or has another feature size.
    """
    similarity, split = similarity.check(), split.of_images("inspect leaks")
    layout = resolve_store(job.store)
    data = open_set(layout, features)
    if against is not None:
        other = _other_set(layout, data, against)
        pairs = [(_Side(data, _all(data), _stored(data)), _Side(other, _all(other), _stored(other)))]
        notes, split_info = [], None
    else:
        parts, notes, split_info = _split_parts(data, split)
        order = np.concatenate([np.flatnonzero(parts == p) for p in ("train", "val", "test")])
        pairs = _comparisons(data.subset(order), parts[order])  # each part one run of rows
    with run_job("inspect", job, lazy=True, reporter=reporter) as run:
        timer = Timer()
        for line in notes:
            reporter.log(line)
        run.begin()
        items, summary_parts, stats = _compare(layout, pairs, similarity.threshold, reporter.progress)
        emissions = run.stop_measuring()
        summary = {
            "n_images": len(data),
            "n_leaked": len(items),
            "against": against,
            "n_against": len(pairs[0][1].data) if against else None,
            "split": split_info,
            "parts": summary_parts,
            "n_pairs": stats.n_pairs,
        }
        opts = {**similarity.to_dict(), **({"against": against} if against else {"split": split.to_dict()})}
        sets = [features, against] if against else [features]
        result = Inspection(
            "leaks", run.run_id, sets, data.dataset, opts, summary, COLUMNS, items, [], notes,
            emissions=emissions.to_dict(),
        )  # fmt: skip
        result.seconds = timer.seconds()
        write_inspection(layout, result)
        digests = [data.backbone_digest] + ([pairs[0][1].data.backbone_digest] if against else [])
        run.record = inspect_record(result, digests, {"n_images": len(data), "n_leaked": len(items)})
    return result


def _all(data: InspectSet) -> np.ndarray:
    return np.arange(len(data))


def _stored(data: InspectSet) -> np.ndarray:
    return np.asarray(data.split, dtype=object)


def _other_set(layout: StoreLayout, data: InspectSet, against: str) -> InspectSet:
    """Feature set `against`, checked to lie in the same feature space as `data`."""
    if against == data.name:
        raise InvalidOptionError("against", f"names {against} itself; give another feature set")
    other = open_set(layout, against)
    if other.backbone_digest != data.backbone_digest or other.n_features != data.n_features:
        raise StoreMismatchError(
            f"{against} was made by another backbone export ({other.backbone}, {other.n_features} "
            f"features, digest {str(other.backbone_digest)[:12]}) than {data.name} ({data.backbone}, "
            f"{data.n_features} features, digest {str(data.backbone_digest)[:12]}): their features "
            f"cannot be compared; extract both with the same backbone"
        )
    return other


def _split_parts(data: InspectSet, options: SplitOptions) -> tuple[np.ndarray, list[str], dict]:
    """The part of every row under a head's split (unlabelled rows keep their stored part), the
    notes saying how it was chosen, and its description; DatasetError when none can be made."""
    stored = _stored(data)
    has_stored = bool(any(stored))
    if not (data.labels >= 0).any():
        if not has_stored:
            raise DatasetError(
                f"{data.name} has no labels and no stored split, so it has no parts to compare; "
                "give --against SET to compare it with another feature set"
            )
        return stored, [f"{data.name} has no labels: compared its stored parts"], {"source": "stored"}
    try:
        split = make_split(data.labels, data.split, data.class_names, options, digests=data.digests)
    except DatasetError as err:
        if not has_stored:
            raise DatasetError(
                f"leaks compares the parts of the split a head would use, and none can be made: {err}"
            ) from None
        note = f"no split a head could use ({err}); compared the stored parts instead"
        return stored, [note], {"source": "stored"}
    parts = np.where(data.labels < 0, stored, "").astype(object)
    for name in ("train", "val", "test"):
        parts[getattr(split, name)] = name
    info = split.describe()
    how = (
        "the stored split"
        if split.source == "stored"
        else f"the {split.source} split fit-head makes (test {split.test_size:g}, val {split.val_size:g}"
        + (f", seed {split.seed})" if split.source == "stratified" else ")")
    )
    if split.source != "stored" and options.split == "auto":
        how = f"no stored split: {how}"
    notes = [
        f"compared the parts of {how}: train {info['n_train']}, val {info['n_val']}, test {info['n_test']} images"
    ]
    if split.note:
        notes.append(split.note)
    return parts, notes, info


def _comparisons(data: InspectSet, parts: np.ndarray) -> list[tuple[_Side, _Side]]:
    """(held-out side, training side) for each held-out part that has images."""
    out = []
    for held, against in COMPARED.items():
        rows = np.flatnonzero(parts == held)
        keys = np.flatnonzero(np.isin(parts, against))
        if len(rows) and len(keys):
            out.append((_Side(data, rows, parts[rows]), _Side(data, keys, parts[keys])))
    if not out:
        have = sorted({str(p) for p in parts if p})
        raise DatasetError(
            f"{data.name} has no held-out part to compare with training images (parts: "
            f"{', '.join(have) or 'none'}); give --against SET, or a split with val or test images"
        )
    return out


def _compare(layout: StoreLayout, pairs, threshold: float, progress):
    """Leaked rows of every comparison, most similar first, and a summary per held-out part."""
    items, summary, stats = [], [], PairStats()
    cache: dict[str, np.ndarray] = {}
    for held, train in pairs:
        X = _features(layout, held.data, cache)
        Y = _features(layout, train.data, cache)
        nearest = Nearest.empty(len(held.rows))
        A, B = take_rows(X, held.rows), take_rows(Y, train.rows)
        for i, j, s in iter_pairs(A, B, threshold, progress=progress, stats=stats):
            nearest.update(i, j, s)
        leaked = np.flatnonzero(nearest.index >= 0)
        items += [_item(held, train, int(k), nearest) for k in leaked]
        same = held.data is train.data
        summary.append(
            {
                "part": str(held.parts[0]) if same else held.data.name,
                "compared_with": sorted({str(p) for p in train.parts}) if same else train.data.name,
                "n_images": len(held.rows),
                "n_leaked": len(leaked),
                "fraction": round(len(leaked) / len(held.rows), 6),
            }
        )
    items.sort(key=lambda r: (-r["similarity"], not r["exact"], r["path"]))
    for rank, item in enumerate(items, start=1):
        item["rank"] = rank
    return items, summary, stats


def _features(layout: StoreLayout, data: InspectSet, cache: dict) -> np.ndarray:
    if data.name not in cache:
        cache[data.name] = unit_features(layout, data)
    return cache[data.name]


def _item(held: _Side, train: _Side, k: int, nearest: Nearest) -> dict:
    i = int(held.rows[k])
    j = int(train.rows[nearest.index[k]])
    return {
        "part": str(held.parts[k]) or None,
        "path": held.data.paths[i],
        "label": held.data.label_name(i),
        "similarity": round(min(float(nearest.similarity[k]), 1.0), 6),
        "other_part": str(train.parts[nearest.index[k]]) or None,
        "other_path": train.data.paths[j],
        "other_label": train.data.label_name(j),
        "exact": held.data.digests[i] == train.data.digests[j],
        "n_matches": int(nearest.n_matches[k]),
    }
