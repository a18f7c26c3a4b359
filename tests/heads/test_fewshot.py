"""Few-shot curves: k images per class with a recorded seed per repeat, validation cut to k per
class, the test part unchanged; mean and standard deviation per head and k."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import blobs, via_store, write_synthetic_set

from featstore.data.options import ShotOptions, SplitOptions
from featstore.errors import DatasetError, HeadError, InvalidOptionError
from featstore.heads.fewshot import few_shot as few_shot_objects
from featstore.heads.kinds.logistic import LogisticParams
from featstore.options import JobOptions
from featstore.store.layout import resolve_store
from featstore.store.runlog import FewShotRecord, read_records

CLASSES = ["ant", "bee", "cow"]
few_shot = via_store("few_shot")


@pytest.fixture
def blob_store(tmp_path):
    X, y = blobs(n_per_class=30, seed=5)
    X += np.random.default_rng(2).normal(0, 4, X.shape).astype(np.float32)
    labels = y.copy()
    write_synthetic_set(tmp_path / "store", "bugs@tiny", X, labels, CLASSES)
    return tmp_path / "store"


def _draws(path):
    return json.loads(open(path).read())["draws"]


def test_curves_of_a_kind_with_a_seed_per_draw(blob_store):
    kw = {"seed": 4, "C": [1.0], "store": str(blob_store), "emissions": False}
    r = few_shot("logistic", ["bugs@tiny"], shots=(1, 3, 10), repeats=3, **kw)
    assert r.mode == "logistic" and r.shots == [1, 3, 10] and r.seeds == [4, 5, 6]
    assert [(c["head"], c["shots"], c["n"]) for c in r.curves] == [("logistic", k, 3) for k in (1, 3, 10)]
    for c in r.curves:
        accs = np.array(c["accuracies"])
        assert c["mean"] == pytest.approx(accs.mean(), abs=1e-6) and c["std"] == pytest.approx(
            accs.std(ddof=1), abs=1e-6
        )
        assert c["min"] == pytest.approx(accs.min()) and 0 <= c["mean"] <= 1
    draws = _draws(r.path)
    assert [(d["shots"], d["seed"]) for d in draws] == [(k, s) for k in (1, 3, 10) for s in (4, 5, 6)]
    meta_split = json.loads(open(r.path).read())["split"]
    for d in draws:
        assert len(d["train"]) == 3 * d["shots"] and len(d["val"]) <= 3 * d["shots"]
    assert len({tuple(d["train"]) for d in draws if d["shots"] == 1}) == 3  # each seed its own draw
    assert meta_split["n_test"] == 18  # the test part is unchanged
    job = JobOptions(str(blob_store), emissions=False)
    again = few_shot_objects(
        LogisticParams(C=1.0, random_state=4), ["bugs@tiny"], shots=ShotOptions((1, 3, 10), 3),
        split=SplitOptions(seed=4), job=job,
    )  # fmt: skip
    assert again.curves == r.curves and _draws(again.path) == draws  # a seed repeats its draw
    records, _ = read_records(resolve_store(blob_store))
    assert isinstance(records[0], FewShotRecord) and records[0].seeds == [4, 5, 6]
    assert records[0].curves == r.curves and records[0].mode == "logistic" and records[0].results == r.path


def test_a_sweep_chooses_on_the_cut_validation_part(blob_store):
    grid = {"logistic": {"C": [0.1, 1.0]}, "knn": {"k": [1, 3]}, "svm": {"C": [1.0]}}
    r = few_shot(
        "sweep", ["bugs@tiny"], grid=grid, shots=[1, 5], repeats=2, store=str(blob_store), emissions=False
    )
    heads = {c["head"] for c in r.curves}
    assert heads == {"best", "best logistic", "best knn", "best svm"} or heads == {
        "best",
        "best logistic",
        "best knn",
    }
    at1 = {c["head"] for c in r.curves if c["shots"] == 1}
    assert "best svm" not in at1  # the svm needs 2 images per class to calibrate
    assert any(n.startswith("svm C=1 at 1 shots: svm calibrates its probabilities") for n in r.notes)
    for c in r.curves:
        assert len(c["chosen"]) == c["n"] == 2
        if c["head"] != "best":
            assert all(s.startswith(c["head"].split()[1]) for s in c["chosen"])
    assert all(len(d["val"]) <= 3 * d["shots"] for d in _draws(r.path))


def test_every_kind_and_a_join(tmp_path):
    X, y = blobs(n_per_class=12, seed=6)
    store = tmp_path / "s"
    write_synthetic_set(store, "bugs@a", X, y, CLASSES)
    write_synthetic_set(store, "bugs@b", X[:, :4], y, CLASSES, backbone_digest="c" * 64)
    r = few_shot(
        "all", ["bugs@a", "bugs@b"], shots=[2], repeats=2, epochs=2, store=str(store), emissions=False
    )
    assert r.feature_sets == ["bugs@a", "bugs@b", "bugs@a+bugs@b"]
    assert {(c["head"], c["features"]) for c in r.curves} == {
        (k, f) for k in ("svm", "logistic", "dense", "knn") for f in r.feature_sets
    }
    assert len(_draws(r.path)) == 2  # one draw per seed for the three sources of the same images


@pytest.mark.parametrize(
    "mode,kw,error,message",
    [
        (
            "logistic",
            {"shots": [25]},
            DatasetError,
            r"^--shots 25 is more than the 21 training image\(s\) of class '(ant|bee|cow)'; use shots of at most 21$",
        ),
        ("logistic", {"shots": []}, InvalidOptionError, "^shots: give at least one number"),
        (
            "logistic",
            {"shots": [0, 2]},
            InvalidOptionError,
            r"^shots: must be whole numbers of at least 1, not \[0, 2\]$",
        ),
        ("logistic", {"shots": [2, 2]}, InvalidOptionError, "^shots: lists a value twice"),
        (
            "logistic",
            {"shots": [2], "repeats": 0},
            InvalidOptionError,
            "^repeats: must be a whole number of at least 1",
        ),
        (
            "logistic",
            {"shots": [2], "grid": {"knn": {"k": [1]}}},
            InvalidOptionError,
            "^grid: a grid is for a sweep",
        ),
        (
            "sweep",
            {"shots": [2], "ensemble": 2},
            InvalidOptionError,
            "^ensemble: few-shot runs save no heads",
        ),
        ("ensemble", {"shots": [2]}, HeadError, "^ensemble heads are made from saved heads"),
        ("forest", {"shots": [2]}, HeadError, "^unknown head 'forest'"),
        ("sweep", {"shots": [2], "val_size": 0.0}, DatasetError, "the split has no validation part"),
    ],
)
def test_bad_few_shot_runs_are_one_line_and_touch_nothing(blob_store, mode, kw, error, message):
    with pytest.raises(error, match=message):
        few_shot(mode, ["bugs@tiny"], store=str(blob_store), emissions=False, **kw)
    assert not (blob_store / "runs.jsonl").exists()


def test_a_kind_needs_no_validation_part(blob_store):
    r = few_shot(
        "knn", ["bugs@tiny"], shots=[2], repeats=1, val_size=0.0, store=str(blob_store), emissions=False
    )
    assert r.curves[0]["n"] == 1 and _draws(r.path)[0]["val"] == []
