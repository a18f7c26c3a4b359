"""`find_duplicates`: identical files and near duplicates of a feature set, clustered and ranked."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import blobs, via_store, write_synthetic_set

from featstore.errors import DatasetError, InvalidOptionError, UnknownFeatureSetError
from featstore.inspect.options import SimilarityOptions
from featstore.inspect.results import read_inspection
from featstore.options import JobOptions
from featstore.store.layout import resolve_store
from featstore.store.runlog import read_records

find_duplicates = via_store("inspect_duplicates")


CLASSES = ["ant", "bee", "cow"]


def _set(store, name="bugs@tiny", n_per_class=20, **kw):
    """Blobs with: rows 10 and 11 one file (same digest), row 3 a near copy of row 45 (another
    class), rows 30, 31 and 32 a chain of near copies."""
    X, y = blobs(n_per_class, 3, 16)
    rng = np.random.default_rng(1)
    X[3] = X[45] + rng.normal(0, 1e-3, 16)
    X[31] = X[30] + rng.normal(0, 1e-3, 16)
    X[32] = X[31] + rng.normal(0, 1e-3, 16)
    digests = [f"{i:064x}" for i in range(len(y))]
    digests[11] = digests[10]
    X[11] = X[10]
    write_synthetic_set(store, name, X, y, CLASSES, digests=digests, **kw)
    return X, y


def test_exact_and_near_duplicates_ranked_in_clusters(tmp_path):
    store = tmp_path / "s"
    _set(store)
    r = find_duplicates("bugs@tiny", store=str(store), emissions=False, threshold=0.9999)
    s = r.summary
    assert (s["n_images"], s["n_distinct"], s["n_extra_copies"]) == (60, 59, 1)
    assert (s["n_exact_groups"], s["n_near_clusters"], s["n_near_images"]) == (1, 2, 5)
    assert s["n_mixed_label_clusters"] == 1
    kinds = [(g["cluster"], g["kind"], g["n_images"]) for g in r.groups]
    assert kinds[0] == (1, "exact", 2)  # identical files first (similarity 1)
    assert sorted(k[1:] for k in kinds[1:]) == [("near", 2), ("near", 3)]
    mixed = next(g for g in r.groups if g["mixed_labels"])
    assert mixed["labels"] == {"ant": 1, "cow": 1} and set(mixed["paths"]) == {"ant/3.jpg", "cow/45.jpg"}
    exact = [i for i in r.items if i["cluster"] == 1]
    assert {(i["path"], i["nearest"], i["exact"]) for i in exact} == {
        ("ant/10.jpg", "ant/11.jpg", True),
        ("ant/11.jpg", "ant/10.jpg", True),
    }
    chain = next(g for g in r.groups if g["n_images"] == 3)
    assert chain["paths"] and set(chain["paths"]) == {"bee/30.jpg", "bee/31.jpg", "bee/32.jpg"}
    assert r.rows(2) == [{c: i[c] for c in r.columns} for i in exact]
    assert len(r.rows()) == 7 and len(r.rows(0)) == 7 and r.limited(3) == r.items[:3]


def test_result_file_and_run_record(tmp_path):
    store = tmp_path / "s"
    _set(store)
    r = find_duplicates("bugs@tiny", job=JobOptions(store=str(store), emissions=False))
    saved = read_inspection(r.path)
    assert saved.to_dict() == json.loads(json.dumps(r.to_dict()))
    assert r.path == str(store.absolute() / "inspections" / f"{r.run_id}.json")
    records, notes = read_records(resolve_store(store))
    (rec,) = [x for x in records if x.command == "inspect"]
    assert not notes and rec.id == r.run_id and rec.dataset == "bugs"
    assert rec.extra["check"] == "duplicates" and rec.extra["feature_sets"] == ["bugs@tiny"]
    assert rec.extra["result"] == f"inspections/{r.run_id}.json" and rec.extra["options"] == {
        "threshold": 0.95
    }
    assert rec.counts["n_images"] == 60 and rec.seconds is not None


def test_augmented_views_are_left_out(tmp_path):
    store = tmp_path / "s"
    X, y = blobs(10, 2, 8)
    view = np.tile([0, 1], 10)  # every second row an augmented view of the row before
    digests = [f"{i // 2:064x}" for i in range(20)]
    write_synthetic_set(store, "v@tiny", X, y, ["a", "b"], digests=digests, view=view)
    r = find_duplicates("v@tiny", store=str(store), emissions=False)
    assert r.summary["n_images"] == 10 and r.summary["n_exact_groups"] == 0


def test_a_low_threshold_chains_images_and_says_so(tmp_path):
    store = tmp_path / "s"
    _set(store)
    r = find_duplicates("bugs@tiny", store=str(store), emissions=False, threshold=0.2)
    assert r.groups[0]["n_images"] > 6
    assert r.notes and "unrelated images chain together; raise --threshold" in r.notes[0]


@pytest.mark.parametrize("bad", [0, -0.5, 1.5, float("nan"), "x"])
def test_threshold_outside_0_1_is_refused(tmp_path, bad):
    store = tmp_path / "s"
    _set(store)
    with pytest.raises(InvalidOptionError, match=r"threshold: must be a cosine similarity in \(0, 1\]"):
        find_duplicates("bugs@tiny", store=str(store), emissions=False, threshold=bad)
    assert not (store / "inspections").exists() and not (store / "runs.jsonl").exists()


def test_an_unknown_option_lists_the_valid_ones(tmp_path):
    with pytest.raises(InvalidOptionError, match="^folds: unknown option; valid ones: threshold$"):
        find_duplicates("x@y", folds=3, store=str(tmp_path))
    with pytest.raises(InvalidOptionError, match="^threshold: must be a cosine similarity"):
        SimilarityOptions(0.0).check()


def test_unknown_and_empty_feature_sets(tmp_path):
    store = tmp_path / "s"
    _set(store)
    with pytest.raises(UnknownFeatureSetError, match="no feature set 'nope@tiny'.*there are: bugs@tiny"):
        find_duplicates("nope@tiny", store=str(store), emissions=False)
    write_synthetic_set(store, "empty@tiny", np.zeros((0, 4), np.float32), np.zeros(0, int), ["a", "b"])
    with pytest.raises(DatasetError, match="empty@tiny holds no images"):
        find_duplicates("empty@tiny", store=str(store), emissions=False)


def test_nan_features_are_refused(tmp_path):
    store = tmp_path / "s"
    X, y = blobs(5, 2, 4)
    X[3, 1] = np.nan
    write_synthetic_set(store, "nan@tiny", X, y, ["a", "b"])
    with pytest.raises(DatasetError, match="NaN or infinite features in 1 rows.*re-extract it with --force"):
        find_duplicates("nan@tiny", store=str(store), emissions=False)


def test_one_image_and_unlabelled_sets_work(tmp_path):
    store = tmp_path / "s"
    write_synthetic_set(store, "one@tiny", np.ones((1, 4), np.float32), [0], ["a"])
    r = find_duplicates("one@tiny", store=str(store), emissions=False)
    assert r.summary["n_images"] == 1 and r.items == []
    X, _ = blobs(5, 2, 4)
    X[1] = X[0]
    write_synthetic_set(store, "unl@tiny", X, [-1] * 10, ["a", "b"])
    r = find_duplicates("unl@tiny", store=str(store), emissions=False, threshold=0.999)
    assert [(i["label"], i["path"]) for i in r.items] == [(None, "x/0.jpg"), (None, "x/1.jpg")]
