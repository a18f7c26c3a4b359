"""`find_leaks`: held-out images with a near duplicate among training images, within one feature set
(the split a head would use) or against another set of the same backbone."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import blobs, via_store, write_synthetic_set

from featstore.data.options import SplitOptions
from featstore.errors import DatasetError, InvalidOptionError, StoreMismatchError

find_leaks = via_store("inspect_leaks")


CLASSES = ["ant", "bee"]


def _stored(store, name="bugs@tiny"):
    """40 images, stored split: per class 14 train, 3 val, 3 test. Test row 18 (ant) is a near copy
    of train row 2; val row 36 (bee) is the same file as train row 21 (one digest)."""
    X, y = blobs(20, 2, 16)
    split = (["train"] * 14 + ["val"] * 3 + ["test"] * 3) * 2
    X[18] = X[2] * 1.0001
    digests = [f"{i:064x}" for i in range(40)]
    digests[36], X[36] = digests[21], X[21]
    write_synthetic_set(store, name, X, y, CLASSES, split=split, digests=digests)
    return X, y, split, digests


def test_leaks_across_the_stored_parts(tmp_path):
    store = tmp_path / "s"
    _stored(store)
    r = find_leaks("bugs@tiny", store=str(store), emissions=False, threshold=0.999)
    assert [(i["part"], i["path"], i["other_part"], i["other_path"], i["exact"]) for i in r.items] == [
        ("val", "bee/36.jpg", "train", "bee/21.jpg", True),
        ("test", "ant/18.jpg", "train", "ant/2.jpg", False),
    ]
    assert [i["rank"] for i in r.items] == [1, 2]
    assert r.summary["parts"] == [
        {
            "part": "val",
            "compared_with": ["train"],
            "n_images": 6,
            "n_leaked": 1,
            "fraction": round(1 / 6, 6),
        },
        {
            "part": "test",
            "compared_with": ["train", "val"],
            "n_images": 6,
            "n_leaked": 1,
            "fraction": round(1 / 6, 6),
        },
    ]
    assert r.summary["split"]["source"] == "stored" and r.notes[0].startswith(
        "compared the parts of the stored split"
    )
    assert r.options == {"threshold": 0.999, "split": SplitOptions().to_dict()}


def test_without_a_stored_split_the_stratified_split_of_fit_head_is_used(tmp_path):
    store = tmp_path / "s"
    X, y = blobs(20, 2, 16)
    X[5] = X[6]
    write_synthetic_set(store, "bugs@tiny", X, y, CLASSES)
    r = find_leaks("bugs@tiny", store=str(store), emissions=False, threshold=0.999)
    assert r.notes[0].startswith(
        "compared the parts of no stored split: the stratified split fit-head makes (test 0.2, val 0.1, seed 0)"
    )
    assert r.summary["split"]["n_test"] == 8
    parts = {i["part"] for i in r.items} | {i["other_part"] for i in r.items}
    assert len(r.items) <= 1 and parts <= {"train", "val", "test"}
    h = find_leaks("bugs@tiny", store=str(store), emissions=False, split="hash", test_size=0.3, val_size=0.0)
    assert "the hash split fit-head makes (test 0.3, val 0)" in h.notes[0]
    assert [p["part"] for p in h.summary["parts"]] == ["test"]


def test_against_another_set_of_the_same_backbone(tmp_path):
    store = tmp_path / "s"
    X, y, split, digests = _stored(store, "train@tiny")
    Xh = X[[0, 5, 33]] * 1.0001
    Xh[2] += 5  # no longer a copy
    write_synthetic_set(
        store, "holdout@tiny", Xh, [0, 0, 1], CLASSES, digests=[digests[0], "f" * 64, "e" * 64]
    )
    r = find_leaks("holdout@tiny", against="train@tiny", store=str(store), emissions=False, threshold=0.999)
    assert [(i["path"], i["other_path"], i["other_part"], i["exact"]) for i in r.items] == [
        ("ant/0.jpg", "ant/0.jpg", "train", True),
        ("ant/1.jpg", "ant/5.jpg", "train", False),
    ]
    assert r.summary["parts"] == [
        {
            "part": "holdout@tiny",
            "compared_with": "train@tiny",
            "n_images": 3,
            "n_leaked": 2,
            "fraction": 0.666667,
        }
    ]
    assert r.feature_sets == ["holdout@tiny", "train@tiny"] and r.summary["n_against"] == 40


def test_against_a_set_of_another_backbone_or_itself_is_refused(tmp_path):
    store = tmp_path / "s"
    X, y, *_ = _stored(store)
    write_synthetic_set(store, "other@big", X, y, CLASSES, backbone_digest="c" * 64)
    with pytest.raises(
        StoreMismatchError, match="other@big was made by another backbone export.*cannot be compared"
    ):
        find_leaks("bugs@tiny", against="other@big", store=str(store), emissions=False)
    write_synthetic_set(store, "wide@tiny", np.hstack([X, X]), y, CLASSES)
    with pytest.raises(StoreMismatchError, match="32 features"):
        find_leaks("bugs@tiny", against="wide@tiny", store=str(store), emissions=False)
    with pytest.raises(InvalidOptionError, match="against: names bugs@tiny itself"):
        find_leaks("bugs@tiny", against="bugs@tiny", store=str(store), emissions=False)
    assert not (store / "runs.jsonl").exists()


def test_unlabelled_sets(tmp_path):
    store = tmp_path / "s"
    X, _ = blobs(10, 2, 8)
    X[15] = X[1]
    write_synthetic_set(store, "u@tiny", X, [-1] * 20, CLASSES, split=["train"] * 12 + ["test"] * 8)
    r = find_leaks("u@tiny", store=str(store), emissions=False, threshold=0.999)
    assert r.notes == ["u@tiny has no labels: compared its stored parts"]
    assert [(i["path"], i["other_path"]) for i in r.items] == [("x/15.jpg", "x/1.jpg")]
    write_synthetic_set(store, "bare@tiny", X, [-1] * 20, CLASSES)
    with pytest.raises(DatasetError, match="bare@tiny has no labels and no stored split.*give --against SET"):
        find_leaks("bare@tiny", store=str(store), emissions=False)
    r = find_leaks("bare@tiny", against="u@tiny", store=str(store), emissions=False, threshold=0.999)
    assert len(r.items) == 20  # every image is in u@tiny too


def test_one_class_falls_back_on_the_stored_parts_or_says_why_not(tmp_path):
    store = tmp_path / "s"
    X, _ = blobs(10, 1, 8)
    write_synthetic_set(store, "one@tiny", X, [0] * 10, ["ant"], split=["train"] * 7 + ["test"] * 3)
    r = find_leaks("one@tiny", store=str(store), emissions=False)
    assert "no split a head could use" in r.notes[0] and "compared the stored parts instead" in r.notes[0]
    write_synthetic_set(store, "one2@tiny", X, [0] * 10, ["ant"])
    with pytest.raises(
        DatasetError, match="leaks compares the parts of the split a head would use, and none can be made"
    ):
        find_leaks("one2@tiny", store=str(store), emissions=False)


def test_only_a_train_part_has_nothing_to_compare(tmp_path):
    store = tmp_path / "s"
    X, _ = blobs(5, 2, 8)
    write_synthetic_set(store, "t@tiny", X, [-1] * 10, CLASSES, split=["train"] * 10)
    with pytest.raises(
        DatasetError, match=r"no held-out part to compare with training images \(parts: train\)"
    ):
        find_leaks("t@tiny", store=str(store), emissions=False)


def test_bad_threshold_and_split_options(tmp_path):
    store = tmp_path / "s"
    _stored(store)
    with pytest.raises(InvalidOptionError, match="threshold"):
        find_leaks("bugs@tiny", store=str(store), emissions=False, threshold=2)
    with pytest.raises(InvalidOptionError, match="split: must be one of"):
        find_leaks("bugs@tiny", store=str(store), emissions=False, split="random")
