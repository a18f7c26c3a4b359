"""`fit-head sweep` in the library: a grid fitted on one split, chosen on validation, the best of
each kind saved as ordinary heads, the ranked grid written and logged."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import blobs, via_store, write_synthetic_set

from featstore import sweep as sweep_objects
from featstore.errors import DatasetError, HeadError, InvalidOptionError
from featstore.heads.params import SweepOptions
from featstore.heads.results import SWEEP_COLUMNS as COLUMNS
from featstore.options import JobOptions
from featstore.store.head_files import list_heads, load_head, read_meta
from featstore.store.layout import resolve_store
from featstore.store.runlog import SweepRecord, read_records

CLASSES = ["ant", "bee", "cow"]
fit_head, evaluate, sweep = via_store("fit_head"), via_store("evaluate"), via_store("sweep")
GRID = {"logistic": {"C": [0.01, 1.0]}, "knn": {"k": [1, 5]}, "svm": {"C": [1.0]}}


@pytest.fixture
def blob_store(tmp_path):
    X, y = blobs(n_per_class=30, seed=3)
    X += np.random.default_rng(1).normal(0, 3, X.shape).astype(np.float32)  # not every setting is perfect
    write_synthetic_set(tmp_path / "store", "bugs@tiny", X, y, CLASSES)
    return tmp_path / "store"


def _sweep(store, **kw):
    if "options" in kw:
        return sweep_objects(["bugs@tiny"], job=JobOptions(str(store), emissions=False), **kw)
    kw.setdefault("grid", GRID)
    kw.setdefault("select", "val")  # these tests are about choosing on validation
    return sweep(["bugs@tiny"], store=str(store), emissions=False, **kw)


def test_the_best_of_each_kind_is_saved_as_an_ordinary_head(blob_store):
    r = _sweep(blob_store, name="bugs")
    layout = resolve_store(blob_store)
    assert r.n_settings == 5 and len(r.rows) == 5 and r.feature_sets == ["bugs@tiny"]
    assert [row["rank"] for row in r.rows] == [1, 2, 3, 4, 5] and list(r.rows[0]) == COLUMNS
    vals = [row["val_accuracy"] for row in r.rows]
    assert vals == sorted(vals, reverse=True)
    saved = [row for row in r.rows if row["head_id"]]
    assert {row["kind"] for row in saved} == {"logistic", "knn", "svm"}
    assert saved[0] is r.rows[0] and saved[0]["chosen"] == "best"  # the best overall comes first
    assert all(row["chosen"] == f"best {row['kind']}" for row in saved[1:])
    # the test part is scored for the saved heads only
    assert all((row["test_accuracy"] is None) == (row["head_id"] is None) for row in r.rows)
    assert r.best_head_id == saved[0]["head_id"] == r.heads[0].head_id
    assert {h["head_id"] for h in list_heads(layout)} == {f"bugs-{k}" for k in ("logistic", "knn", "svm")}
    for row in saved:
        meta = read_meta(layout, row["head_id"])
        assert meta["metrics"]["val"]["accuracy"] == row["val_accuracy"]
        assert meta["metrics"]["test"]["accuracy"] == row["test_accuracy"]
        assert meta["sweep"] == {
            "run_id": r.run_id, "setting": row["setting"], "chosen": row["chosen"], "n_settings": 5,
        }  # fmt: skip
        assert (layout.heads / row["head_id"] / "misclassified.json").is_file()
    ev = evaluate("bugs-knn", ["bugs@tiny"], store=str(blob_store))
    assert ev.n_rows == 90
    table = json.loads(open(r.path).read())
    assert table["rows"] == json.loads(json.dumps(r.rows)) and table["n_settings"] == 5
    (record, evaluated), notes = read_records(layout)
    assert notes == [] and isinstance(record, SweepRecord) and record.id == r.run_id
    assert evaluated.command == "evaluate"
    assert record.n_settings == 5 and record.results == r.path and record.best_head_id == r.best_head_id
    assert [h["head_id"] for h in record.heads] == [h.head_id for h in r.heads]
    assert record.split["n_val"] == 9 and record.counts == {"n_settings": 5, "n_sources": 1, "n_heads": 3}


def test_shared_scaling_gives_the_head_fit_head_gives(blob_store):
    r = _sweep(blob_store, grid={"logistic": {"C": [1.0], "scale": ["l2"]}, "svm": {"C": [1.0]}})
    (plain,) = fit_head(
        "logistic", ["bugs@tiny"], store=str(blob_store), emissions=False, C=[1.0], scale="l2"
    )
    layout = resolve_store(blob_store)
    swept, _ = load_head(layout, next(h.head_id for h in r.heads if h.kind == "logistic"))
    fitted, _ = load_head(layout, plain.head_id)
    X, _ = blobs(n_per_class=30, seed=3)
    np.testing.assert_allclose(swept.predict_proba(X), fitted.predict_proba(X), rtol=1e-5, atol=1e-6)
    assert swept.steps[0][1].__class__.__name__ == "Normalizer"


def test_settings_in_parallel_threads_give_the_same_table(blob_store):
    one = _sweep(blob_store, n_jobs=1)
    two = _sweep(blob_store, n_jobs=2)
    keep = ("setting", "val_accuracy", "test_accuracy", "chosen")
    assert [{k: r[k] for k in keep} for r in one.rows] == [{k: r[k] for k in keep} for r in two.rows]


def test_the_dense_head_in_a_sweep_takes_raw_features(blob_store):
    grid = {"dense": {"hidden": [[8]], "dropout": [0.0, 0.2]}, "knn": {"k": [3]}}
    _sweep(blob_store, grid=grid, epochs=3, n_jobs=2, name="d")
    (plain,) = fit_head(
        "dense", ["bugs@tiny"], store=str(blob_store), emissions=False, hidden=(8,), dropout=0.0, epochs=3
    )
    layout = resolve_store(blob_store)
    swept, meta = load_head(layout, "d-dense")
    fitted, _ = load_head(layout, plain.head_id)
    X, _ = blobs(n_per_class=30, seed=3)
    if meta["sweep"]["setting"] == "dense hidden=8 dropout=0":
        np.testing.assert_allclose(swept.predict_proba(X), fitted.predict_proba(X), rtol=1e-4, atol=1e-5)
    assert swept.scale == "standard" and swept.scaler_.__class__.__name__ == "StandardScaler"
    assert meta["config"]["epochs"] == 3 and (layout.heads / "d-dense" / "model.keras").is_file()


def test_sets_of_the_same_images_are_swept_alone_and_joined(tmp_path):
    X, y = blobs(n_per_class=20, seed=4)
    store = tmp_path / "s"
    write_synthetic_set(store, "bugs@a", X, y, CLASSES)
    order = np.random.default_rng(0).permutation(len(y))  # the same images in another order
    digests = [f"{i:064x}" for i in range(len(y))]
    write_synthetic_set(
        store, "bugs@b", X[order][:, :5] + 1, y[order], CLASSES, backbone_digest="c" * 64,
        digests=[digests[i] for i in order],
    )  # fmt: skip
    write_synthetic_set(
        store, "other@c", X[:30], y[:30] % 2, ["p", "q", "r"], digests=[f"{i:064x}" for i in range(900, 930)]
    )
    r = sweep(
        ["bugs@a", "bugs@b"], grid={"knn": {"k": [1, 3]}}, store=str(store), emissions=False, select="val"
    )
    assert r.feature_sets == ["bugs@a", "bugs@b", "bugs@a+bugs@b"] and len(r.rows) == 6
    assert {row["features"] for row in r.rows} == set(r.feature_sets)
    assert len(r.heads) == 1  # one best knn for one set of images
    meta = read_meta(resolve_store(store), r.heads[0].head_id)
    splits = {
        s: json.loads((resolve_store(store).heads / r.heads[0].head_id / "split.json").read_text())
        for s in [0]
    }
    assert meta["split"]["n_val"] == 6 and len(splits[0]["test"]) == 12
    logged = []
    r2 = sweep(
        ["bugs@a", "other@c"],
        grid={"knn": {"k": [1]}},
        store=str(store),
        emissions=False,
        log=logged.append,
        select="val",
    )
    assert r2.feature_sets == ["bugs@a", "other@c"] and len(r2.heads) == 2  # two sets of images, two choices
    assert logged == ["bugs@a, other@c do not hold the same images; each is swept alone, not joined"]


def test_class_weights_are_recorded(blob_store):
    r = _sweep(blob_store, class_weight="balanced")
    (record,), _ = read_records(resolve_store(blob_store))
    assert record.class_weight == "balanced"
    configs = {h.kind: h.config for h in r.heads}
    assert configs["logistic"]["class_weight"] == configs["svm"]["class_weight"] == "balanced"
    assert "class_weight" not in configs["knn"]


@pytest.mark.parametrize(
    "kw,error,message",
    [
        (
            {"val_size": 0.0},
            DatasetError,
            "^bugs@tiny: the split has no validation part, and a sweep chooses",
        ),
        ({"ensemble": 1}, InvalidOptionError, "^ensemble: an ensemble needs at least 2 picks"),
        ({"options": SweepOptions(ensemble=-2)}, InvalidOptionError, "^ensemble: must be a whole number"),
        ({"batch_size": 4}, InvalidOptionError, "^batch_size: unknown option; valid ones: C, class_weight, "),
        ({"grid": {"knn": {"k": [0]}}}, InvalidOptionError, "^grid: the grid: knn"),
        ({"kind_of": 1}, InvalidOptionError, "^kind_of: unknown option"),
    ],
)
def test_bad_sweeps_touch_nothing(blob_store, kw, error, message):
    with pytest.raises(error, match=message):
        _sweep(blob_store, **kw)
    assert not (blob_store / "heads").exists() and not (blob_store / "runs.jsonl").exists()


def test_a_taken_name_is_refused_before_any_fit(blob_store):
    fit_head("knn", ["bugs@tiny"], store=str(blob_store), emissions=False, name="b-svm")
    with pytest.raises(HeadError, match="^head b-svm exists already; choose another --name or remove it$"):
        _sweep(blob_store, name="b")
    assert len(read_records(resolve_store(blob_store))[0]) == 1
