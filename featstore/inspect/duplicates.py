"""`featstore inspect duplicates`: identical files and near duplicates (cosine similarity at or
above a threshold), grouped into single-linkage clusters and ranked."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from featstore.inspect.options import SimilarityOptions
from featstore.inspect.results import Inspection, Timer, inspect_record, write_inspection
from featstore.inspect.sets import InspectSet, open_set, unit_features
from featstore.inspect.similarity import Components, Nearest, PairStats, iter_pairs
from featstore.jobs import run_job
from featstore.options import JobOptions
from featstore.reporter import SILENT, Reporter
from featstore.store.layout import resolve_store

COLUMNS = ["cluster", "kind", "n_images", "similarity", "label", "part", "path", "nearest"]
#: A cluster holding more than this fraction of the images gets a note: raise the threshold.
CHAIN_FRACTION = 0.1


def find_duplicates(
    features: str,
    *,
    similarity: SimilarityOptions = SimilarityOptions(),
    job: JobOptions = JobOptions(),
    reporter: Reporter = SILENT,
) -> Inspection:
    """Find exact and near duplicates among the plain rows of feature set `features`.

    `similarity.threshold` is the cosine in (0, 1]; `reporter` gets `progress(done, total,
    "compare")` and a line per note.

    Returns
    -------
    Inspection
        `items`: one row per image in a cluster (rank, exact or near, size, similarity to its
        nearest member, label, part, path, nearest member's path), clusters ranked by their
        highest similarity then size; `groups`: the clusters (paths, labels, disagreement).

    Raises
    ------
    InvalidOptionError
        A threshold outside (0, 1].
    UnknownFeatureSetError, DatasetError
        No such feature set, an empty one, or NaN features.
    """
    similarity = similarity.check()
    layout = resolve_store(job.store)
    data = open_set(layout, features)
    with run_job("inspect", job, lazy=True, reporter=reporter) as run:
        timer = Timer()
        first = _first_rows(data.digests)
        distinct = data.subset(first)
        X = unit_features(layout, distinct)
        run.begin()
        stats = PairStats()
        nearest, comps = Nearest.empty(len(distinct)), Components(len(distinct))
        for i, j, s in iter_pairs(X, None, similarity.threshold, progress=reporter.progress, stats=stats):
            nearest.update(i, j, s)
            nearest.update(j, i, s)
            comps.add(i, j)
        del X
        emissions = run.stop_measuring()
        groups, items = _clusters(data, first, comps.groups(), nearest)
        notes = _notes(groups, len(data), similarity.threshold)
        for line in notes:
            reporter.log(line)
        summary = _summary(data, groups, stats, len(first))
        result = Inspection(
            "duplicates", run.run_id, [features], data.dataset, similarity.to_dict(), summary,
            COLUMNS, items, groups, notes, emissions=emissions.to_dict(),
        )  # fmt: skip
        result.seconds = timer.seconds()
        write_inspection(layout, result)
        counts = {k: summary[k] for k in ("n_images", "n_exact_groups", "n_near_clusters", "n_pairs")}
        run.record = inspect_record(result, [data.backbone_digest], counts)
    return result


def _first_rows(digests: list[str]) -> np.ndarray:
    """Position of the first row of each distinct content digest, in row order."""
    first: dict[str, int] = {}
    for i, digest in enumerate(digests):
        first.setdefault(digest, i)
    return np.fromiter(first.values(), dtype=np.int64, count=len(first))


def _clusters(data: InspectSet, first: np.ndarray, comps: list[np.ndarray], nearest: Nearest):
    """Clusters and their members, ranked, from the components and the digests at several paths."""
    by_digest = defaultdict(list)
    for pos, digest in enumerate(data.digests):
        by_digest[digest].append(pos)
    clustered = {int(k) for comp in comps for k in comp}
    singles = [
        np.array([k])
        for k, pos in enumerate(first)
        if len(by_digest[data.digests[pos]]) > 1 and k not in clustered
    ]
    raw = []
    for comp in [*comps, *singles]:
        members = [(int(k), p) for k in comp for p in by_digest[data.digests[first[k]]]]
        raw.append(_members(data, first, members, nearest, by_digest))
    raw.sort(
        key=lambda c: (-c[0]["max_similarity"], c[0]["kind"] != "exact", -c[0]["n_images"], c[1][0]["path"])
    )
    groups, items = [], []
    for rank, (group, rows) in enumerate(raw, start=1):
        groups.append({"cluster": rank, **group})
        items += [{"cluster": rank, **row} for row in rows]
    return groups, items


def _members(data: InspectSet, first: np.ndarray, members, nearest: Nearest, by_digest):
    """One cluster: its summary dict and one row per image (most similar first)."""
    rows = []
    for k, pos in members:
        twins = [p for p in by_digest[data.digests[pos]] if p != pos]
        if twins:
            other, sim, exact = twins[0], 1.0, True
        else:
            other, sim, exact = int(first[nearest.index[k]]), float(nearest.similarity[k]), False
        rows.append(
            {
                "similarity": round(min(sim, 1.0), 6),
                "label": data.label_name(pos),
                "part": data.split[pos] or None,
                "path": data.paths[pos],
                "nearest": data.paths[other],
                "exact": exact,
                "digest": data.digests[pos],
            }
        )
    rows.sort(key=lambda r: (-r["similarity"], r["path"]))
    kind = "exact" if len({r["digest"] for r in rows}) == 1 else "near"
    labels = Counter(r["label"] for r in rows if r["label"] is not None)
    for row in rows:
        row.update(kind=kind, n_images=len(rows))
    group = {
        "kind": kind,
        "n_images": len(rows),
        "max_similarity": rows[0]["similarity"],
        "min_similarity": rows[-1]["similarity"],
        "labels": dict(labels),
        "mixed_labels": len(labels) > 1,
        "paths": [r["path"] for r in rows],
    }
    return group, rows


def _notes(groups: list[dict], n_images: int, threshold: float) -> list[str]:
    """A note when the largest cluster holds more than CHAIN_FRACTION of the images."""
    if not groups:
        return []
    big = max(groups, key=lambda g: g["n_images"])
    if n_images >= 20 and big["n_images"] > CHAIN_FRACTION * n_images:
        share = 100 * big["n_images"] / n_images
        return [
            f"cluster {big['cluster']} holds {big['n_images']} of {n_images} images ({share:.0f} %): "
            f"at cosine {threshold:g} unrelated images chain together; raise --threshold"
        ]
    return []


def _summary(data: InspectSet, groups: list[dict], stats: PairStats, n_distinct: int) -> dict:
    exact = [g for g in groups if g["kind"] == "exact"]
    near = [g for g in groups if g["kind"] == "near"]
    return {
        "n_images": len(data),
        "n_distinct": n_distinct,
        "n_extra_copies": len(data) - n_distinct,
        "n_exact_groups": len(exact),
        "n_exact_images": sum(g["n_images"] for g in exact),
        "n_near_clusters": len(near),
        "n_near_images": sum(g["n_images"] for g in near),
        "n_mixed_label_clusters": sum(g["mixed_labels"] for g in groups),
        "n_pairs": stats.n_pairs,
        "search": stats.to_dict(),
    }
