"""`find_label_issues`: labels that disagree with cross-validated predictions, ranked (cleanlab)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from conftest import blobs, via_store, write_synthetic_set

from featstore.errors import DatasetError, InvalidOptionError, MissingDependencyError
from featstore.inspect.crossval import cross_val_proba, cv_kinds
from featstore.inspect.options import CrossValOptions

pytest.importorskip("cleanlab")
find_label_issues = via_store("inspect_labels")


CLASSES = ["ant", "bee", "cow"]
FLIPPED = {4: 2, 33: 0, 71: 1}  # row -> wrong label written


def _set(store, name="bugs@tiny", **kw):
    X, y = blobs(25, 3, 12)
    y = y.copy()
    for row, label in FLIPPED.items():
        y[row] = label
    write_synthetic_set(store, name, X, y, CLASSES, **kw)
    return X, y


def test_flipped_labels_rank_first(tmp_path):
    store = tmp_path / "s"
    _set(store)
    r = find_label_issues("bugs@tiny", store=str(store), emissions=False)
    top = [(i["path"], i["label"], i["predicted"]) for i in r.items[:3]]
    assert sorted(top) == sorted(
        [("cow/4.jpg", "cow", "ant"), ("ant/33.jpg", "ant", "bee"), ("bee/71.jpg", "bee", "cow")]
    )
    assert [i["rank"] for i in r.items] == list(range(1, len(r.items) + 1))
    p = [i["p_label"] for i in r.items]
    assert p == sorted(p) and all(i["p_predicted"] > i["p_label"] for i in r.items[:3])
    s = r.summary
    assert s["n_labelled"] == 75 and s["n_issues"] == len(r.items) and 3 <= len(r.items) <= 6
    assert s["cv_accuracy"] >= 0.9 and s["folds"] == 5 and s["head"] == "logistic"
    assert sum(c["n_images"] for c in s["per_class"].values()) == 75
    assert r.options == CrossValOptions().to_dict()
    assert r.columns == ["rank", "label", "predicted", "p_label", "p_predicted", "quality", "part", "path"]


def test_other_heads_and_unlabelled_rows(tmp_path):
    store = tmp_path / "s"
    X, y = blobs(25, 3, 12)
    y = y.copy()
    y[4], y[60] = 2, -1
    write_synthetic_set(store, "bugs@tiny", X, y, CLASSES)
    r = find_label_issues("bugs@tiny", store=str(store), emissions=False, head="knn", folds=3)
    assert r.items[0]["path"] == "cow/4.jpg" and r.summary["n_labelled"] == 74
    assert r.notes == ["1 unlabelled image(s) left out"]


def test_unlabelled_set_is_refused_in_one_line(tmp_path):
    store = tmp_path / "s"
    X, _ = blobs(5, 2, 4)
    write_synthetic_set(store, "u@tiny", X, [-1] * 10, ["a", "b"])
    with pytest.raises(DatasetError) as err:
        find_label_issues("u@tiny", store=str(store), emissions=False)
    assert "\n" not in str(err.value)
    assert str(err.value).startswith("u@tiny has no labels, and inspect labels needs labelled images")
    assert not (store / "runs.jsonl").exists()


def test_one_class_and_too_few_images_per_class(tmp_path):
    store = tmp_path / "s"
    X, _ = blobs(8, 2, 4)
    write_synthetic_set(store, "one@tiny", X, [0] * 16, ["a", "b"])
    with pytest.raises(
        DatasetError, match="need at least 2 classes with images; this feature set has only 'a'"
    ):
        find_label_issues("one@tiny", store=str(store), emissions=False)
    y = np.array([0] * 12 + [1] * 4)
    write_synthetic_set(store, "few@tiny", X, y, ["a", "b"])
    with pytest.raises(
        DatasetError,
        match=r"class 'b' has 4 image\(s\); 5-fold cross-validation needs at least 5 per class \(add images, or lower --folds to 4\)",
    ):
        find_label_issues("few@tiny", store=str(store), emissions=False)
    r = find_label_issues("few@tiny", store=str(store), emissions=False, folds=4)
    assert r.summary["n_labelled"] == 16
    write_synthetic_set(store, "single@tiny", X, [0] * 15 + [1], ["a", "b"])
    with pytest.raises(
        DatasetError, match="class 'b' has 1 image; cross-validation needs at least 2 per class"
    ):
        find_label_issues("single@tiny", store=str(store), emissions=False, folds=2)


def test_folds_fail_when_identical_files_leave_too_few_groups(tmp_path):
    store = tmp_path / "s"
    X, y = blobs(4, 2, 4)
    write_synthetic_set(
        store, "g@tiny", X, y, ["a", "b"], digests=["a" * 64] * 4 + [f"{i:064x}" for i in range(4)]
    )
    with pytest.raises(DatasetError, match="3-fold cross-validation cannot split these images"):
        find_label_issues("g@tiny", store=str(store), emissions=False, folds=3)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("folds", 1, "folds: must be a whole number of at least 2"),
        ("C", (0.0,), "C: values must be positive numbers"),
        ("head", "dense", "head: must be one of svm, logistic, knn"),
        ("n_jobs", 0, "n_jobs: must be a whole number of at least 1"),
    ],
)
def test_bad_options(tmp_path, option, value, message):
    store = tmp_path / "s"
    _set(store)
    with pytest.raises(InvalidOptionError, match=message):
        find_label_issues("bugs@tiny", store=str(store), emissions=False, **{option: value})


def test_without_cleanlab_the_error_says_what_to_install(tmp_path, monkeypatch):
    store = tmp_path / "s"
    _set(store)
    for name in [m for m in sys.modules if m == "cleanlab" or m.startswith("cleanlab.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "cleanlab", None)
    with pytest.raises(MissingDependencyError, match=r'pip install "featstore\[inspect\]"'):
        find_label_issues("bugs@tiny", store=str(store), emissions=False)


def test_cross_validated_probabilities_never_see_their_row():
    X, y = blobs(10, 2, 6)
    X = np.vstack([X, X[:1]])  # row 20: a copy of row 0 under the other label
    y = np.append(y, 1)
    cv = cross_val_proba(X, y, [f"{i}" for i in range(21)], ["a", "b"], CrossValOptions(folds=2))
    assert cv.proba.shape == (21, 2) and np.allclose(cv.proba.sum(1), 1)
    assert cv.predicted[20] == 0 and cv.classes.tolist() == [0, 1]
    assert set(cv_kinds()) >= {"logistic", "svm", "knn"} and "dense" not in cv_kinds()
