"""Heads fitted on real HDF5 feature sets of synthetic features with known structure."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import blobs, via_store, write_synthetic_set
from sklearn import metrics as skm

from featstore.errors import (
    DatasetError,
    HeadError,
    InvalidOptionError,
    StoreError,
    StoreMismatchError,
    UnknownFeatureSetError,
)
from featstore.heads.training_data import load_training_data
from featstore.store.head_files import load_head, read_meta
from featstore.store.layout import resolve_store

CLASSES = ["ant", "bee", "cow"]
fit_head, evaluate = via_store("fit_head"), via_store("evaluate")


@pytest.fixture
def blob_store(tmp_path):
    X, y = blobs()
    write_synthetic_set(tmp_path / "store", "bugs@tiny", X, y, CLASSES)
    return tmp_path / "store"


def fit(store, kind="logistic", **kw):
    kw.setdefault("emissions", False)
    return fit_head(kind, ["bugs@tiny"], store=str(store), **kw)


@pytest.mark.parametrize("kind", ["logistic", "svm", "knn", "dense"])
def test_every_head_fits_saves_and_reloads(blob_store, kind):
    (r,) = fit(blob_store, kind)
    assert r.metrics["test"]["accuracy"] > 0.95 and r.metrics["val"]["n"] == 9
    assert (r.split["n_train"], r.split["n_val"], r.split["n_test"]) == (63, 9, 18)
    layout = resolve_store(blob_store)
    est, meta = load_head(layout, r.head_id)
    data = load_training_data(layout, ["bugs@tiny"])
    split = json.loads((layout.heads / r.head_id / "split.json").read_text())
    test_rows = [data.digests.index(d) for d in split["test"]]
    proba = est.predict_proba(data.X[test_rows])
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    y = data.labels[test_rows]
    assert meta["metrics"]["test"]["accuracy"] == pytest.approx(skm.accuracy_score(y, proba.argmax(1)))
    assert meta["metrics"]["test"]["macro_f1"] == pytest.approx(
        skm.f1_score(y, proba.argmax(1), average="macro")
    )
    assert meta["metrics"]["test"]["log_loss"] == pytest.approx(
        skm.log_loss(y, proba, labels=[0, 1, 2]), rel=1e-4
    )
    for f in (
        "model.skops",
        "meta.json",
        "card.md",
        "confusion_test.png",
        "confusion_val.png",
        "metrics.json",
    ):
        assert (layout.heads / r.head_id / f).is_file()
    assert (layout.heads / r.head_id / "confusion_test.png").read_bytes()[:4] == b"\x89PNG"


def test_logistic_searches_the_c_grid_and_svm_kernels(blob_store):
    (r,) = fit(blob_store, "logistic", C=[0.001, 1.0])
    est, _ = load_head(resolve_store(blob_store), r.head_id)
    assert list(est[-1].Cs_) == [0.001, 1.0] and est[-1].C_ in (0.001, 1.0)
    (lin,) = fit(blob_store, "svm", kernel="linear", C=[0.5])
    assert lin.config == {
        "kind": "svm",
        "scale": "standard",
        "C": 0.5,
        "kernel": "linear",
        "class_weight": None,
        "random_state": 0,
    }


def test_metrics_top5_with_many_classes(tmp_path):
    X, y = blobs(n_per_class=10, n_classes=7)
    write_synthetic_set(tmp_path / "s", "many@tiny", X, y, [f"c{i}" for i in range(7)])
    (r,) = fit_head("knn", ["many@tiny"], store=str(tmp_path / "s"), emissions=False)
    assert (
        "top5_accuracy" in r.metrics["test"]
        and r.metrics["test"]["top5_accuracy"] >= r.metrics["test"]["accuracy"]
    )


def test_split_is_repeatable_and_stored_split_is_used(tmp_path, blob_store):
    a, b = fit(blob_store)[0], fit(blob_store)[0]
    layout = resolve_store(blob_store)
    sa = json.loads((layout.heads / a.head_id / "split.json").read_text())
    sb = json.loads((layout.heads / b.head_id / "split.json").read_text())
    assert sa == sb and a.split["source"] == "stratified"
    X, y = blobs()
    split = ["train"] * 60 + ["test"] * 30
    split = [split[i] for i in np.random.default_rng(0).permutation(90)]
    write_synthetic_set(tmp_path / "s2", "bugs@tiny", X, y, CLASSES, split=split)
    (r,) = fit_head("logistic", ["bugs@tiny"], store=str(tmp_path / "s2"), emissions=False)
    assert (
        r.split["source"] == "stored"
        and r.split["n_test"] == 30
        and r.split["n_train"] + r.split["n_val"] == 60
    )


def test_all_heads_one_table_best_first(blob_store):
    results = fit(blob_store, "all", epochs=3, select="val")
    assert sorted(r.kind for r in results) == ["dense", "knn", "logistic", "svm"]
    vals = [r.metrics["val"]["accuracy"] for r in results]
    assert vals == sorted(vals, reverse=True)
    comparisons = list((resolve_store(blob_store).heads / "comparisons").glob("*.md"))
    assert len(comparisons) == 1 and "| dense |" in comparisons[0].read_text()


def test_dense_head_reloads_with_same_predictions(blob_store):
    (r,) = fit(blob_store, "dense", hidden=[16], epochs=5, dropout=0.1)
    layout = resolve_store(blob_store)
    est, meta = load_head(layout, r.head_id)
    assert (layout.heads / r.head_id / "model.keras").is_file() and "history.json" in [
        p.name for p in (layout.heads / r.head_id).iterdir()
    ]
    data = load_training_data(layout, ["bugs@tiny"])
    proba = est.predict_proba(data.X)
    assert proba.shape == (90, 3)
    assert meta["config"]["hidden"] == [16]


def test_concatenated_backbones(tmp_path):
    X, y = blobs()
    store = tmp_path / "s"
    write_synthetic_set(store, "bugs@a", X[:, :6], y, CLASSES, backbone_digest="a" * 64)
    # the second set lacks the last 10 rows and lists its rows in another order
    order = np.random.default_rng(1).permutation(80)
    digests = [f"{i:064x}" for i in range(90)]
    write_synthetic_set(
        store,
        "bugs@b",
        X[order, 6:],
        y[order],
        CLASSES,
        backbone_digest="c" * 64,
        digests=[digests[i] for i in order],
    )
    data = load_training_data(resolve_store(store), ["bugs@a", "bugs@b"])
    assert data.X.shape == (80, 12) and data.n_dropped_in_join == 10
    np.testing.assert_allclose(data.X, X[:80])
    (r,) = fit_head("logistic", ["bugs@a", "bugs@b"], store=str(store), emissions=False)
    meta = read_meta(resolve_store(store), r.head_id)
    assert [s["backbone_digest"][0] for s in meta["sources"]] == ["a", "c"]


def test_digest_guard_names_both_backbones(tmp_path, blob_store):
    (r,) = fit(blob_store)
    X, y = blobs(seed=3)
    write_synthetic_set(blob_store, "other@tiny2", X, y, CLASSES, backbone_digest="e" * 64)
    with pytest.raises(
        StoreMismatchError,
        match=r"trained on features of tiny \(digest bbbbbbbbbbbb\).*tiny2 \(digest eeeeeeeeeeee\)",
    ):
        evaluate(r.head_id, ["other@tiny2"], store=str(blob_store))


def test_evaluate_on_a_holdout_with_fewer_classes(blob_store):
    (r,) = fit(blob_store)
    X, y = blobs(seed=0)
    keep = y != 1
    write_synthetic_set(blob_store, "holdout@tiny", X[keep], np.where(y[keep] == 2, 1, 0), ["ant", "cow"])
    res = evaluate(r.head_id, ["holdout@tiny"], store=str(blob_store))
    assert res.n_rows == 60 and res.metrics["per_class"]["bee"]["support"] == 0
    assert res.metrics["accuracy"] > 0.9


def test_evaluate_is_logged_as_a_run(blob_store):
    from featstore.store.runlog import read_runs

    (r,) = fit(blob_store)
    res = evaluate(r.head_id, ["bugs@tiny"], store=str(blob_store))
    runs, _ = read_runs(resolve_store(blob_store))
    (run,) = [x for x in runs if x["command"] == "evaluate"]
    assert run["id"] == res.run_id and run["head_id"] == r.head_id and run["kind"] == "logistic"
    assert run["dataset"] == "bugs" and run["feature_sets"] == ["bugs@tiny"]
    assert run["metrics"]["accuracy"] == res.metrics["accuracy"] and run["metrics"]["n"] == 90
    assert run["metrics"]["macro_f1"] == res.metrics["macro_f1"] and run["counts"]["n_rows"] == 90
    assert run["seconds"] == res.seconds >= 0 and run["path"] == res.path


def _train_val_store(tmp_path):
    """bugs@tiny with stored train (20 per class) and val (10 per class) parts and no test part."""
    X, y = blobs()
    split = (["train"] * 20 + ["val"] * 10) * 3
    write_synthetic_set(tmp_path / "tv", "bugs@tiny", X, y, CLASSES, split=split)
    return tmp_path / "tv"


def test_train_and_val_folders_fit_every_head_with_val_as_test(tmp_path):
    store = _train_val_store(tmp_path)
    logged = []
    results = fit_head(
        "all", ["bugs@tiny"], store=str(store), emissions=False, epochs=2, log=logged.append, select="val"
    )
    note = (
        "no test split: val (30 images) is the held-out test set; "
        "validation (6 images, 10 % of train) carved from train"
    )
    assert logged == [note] and len(results) == 4
    for r in results:
        assert r.split["source"] == "stored" and r.split["note"] == note
        assert (r.split["n_train"], r.split["n_val"], r.split["n_test"]) == (54, 6, 30)
        assert r.metrics["test"]["n"] == 30
    layout = resolve_store(store)
    meta = read_meta(layout, results[0].head_id)
    assert meta["split"]["note"] == note
    assert f"- Split note: {note}" in (layout.heads / results[0].head_id / "card.md").read_text()
    data = load_training_data(layout, ["bugs@tiny"])
    test = json.loads((layout.heads / results[0].head_id / "split.json").read_text())["test"]
    assert sorted(test) == sorted(d for d, s in zip(data.digests, data.split, strict=True) if s == "val")


def test_split_hash_and_stratified_on_a_stored_split(tmp_path):
    store = _train_val_store(tmp_path)
    logged = []
    (h,) = fit_head(
        "logistic", ["bugs@tiny"], store=str(store), split="hash", emissions=False, log=logged.append
    )
    (s,) = fit_head("logistic", ["bugs@tiny"], store=str(store), split="stratified", emissions=False)
    assert logged == [] and h.split["source"] == "hash" and s.split["source"] == "stratified"
    assert sum(h.split[f"n_{p}"] for p in ("train", "val", "test")) == 90
    assert (s.split["n_train"], s.split["n_val"], s.split["n_test"]) == (63, 9, 18)
    assert read_meta(resolve_store(store), h.head_id)["split"]["source"] == "hash"


def test_tampered_model_is_refused(blob_store):
    (r,) = fit(blob_store)
    model = resolve_store(blob_store).heads / r.head_id / "model.skops"
    model.write_bytes(model.read_bytes() + b"\0")
    with pytest.raises(StoreError, match="changed since it was saved.*refusing to load"):
        load_head(resolve_store(blob_store), r.head_id)


def test_use_augmented_views_of_training_images_only(tmp_path):
    X, y = blobs()
    n = len(y)
    digests = [f"{i:064x}" for i in range(n)]
    Xa = np.vstack([X, X + 0.1])
    write_synthetic_set(
        tmp_path / "s",
        "bugs@tiny",
        Xa,
        np.concatenate([y, y]),
        CLASSES,
        digests=digests * 2,
        view=[0] * n + [1] * n,
    )
    (r,) = fit_head("logistic", ["bugs@tiny"], store=str(tmp_path / "s"), use_augmented=True, emissions=False)
    assert r.n_augmented_train == r.split["n_train"] == 63
    assert r.metrics["test"]["n"] == 18  # views never scored
    (plain,) = fit_head("logistic", ["bugs@tiny"], store=str(tmp_path / "s"), emissions=False)
    assert plain.n_augmented_train == 0
    X2, y2 = blobs()
    write_synthetic_set(tmp_path / "s", "noaug@tiny", X2, y2, CLASSES)
    with pytest.raises(InvalidOptionError, match="use_augmented: noaug@tiny has no augmented views"):
        fit_head("logistic", ["noaug@tiny"], store=str(tmp_path / "s"), use_augmented=True, emissions=False)


@pytest.mark.parametrize(
    "setup,kw,error,message",
    [
        ("none", {}, UnknownFeatureSetError, "no feature set 'bugs@tiny'"),
        ("one-class", {}, DatasetError, "at least 2 classes"),
        ("one-image", {}, DatasetError, "class 'cow' has 1 image"),
        ("nan", {}, DatasetError, "NaN or infinite features in 1 rows"),
        ("ok", {"kind": "forest"}, HeadError, "unknown head 'forest'"),
        ("ok", {"C": [0.1, -1.0]}, InvalidOptionError, "C: values must be positive"),
        ("ok", {"kind": "svm", "C": [0.1, 1.0]}, InvalidOptionError, "C: svm takes one value"),
        ("ok", {"test_size": 0.6, "val_size": 0.5}, InvalidOptionError, "sum below 1"),
        ("stored-no-train", {}, DatasetError, "the stored split has no train part, only test"),
        ("ok", {"split": "stored"}, DatasetError, "--split stored: these images have no stored split"),
        ("ok", {"split": "random"}, InvalidOptionError, "split: must be one of stored, stratified, hash"),
    ],
)
def test_bad_input_touches_nothing(tmp_path, setup, kw, error, message):
    store = tmp_path / "s"
    X, y = blobs()
    split = None
    if setup == "one-class":
        y = np.zeros_like(y)
    elif setup == "one-image":
        X, y = X[:61], y[:61]
    elif setup == "nan":
        X[5, 3] = np.nan
    elif setup == "stored-no-train":
        split = ["test"] * len(y)
    if setup != "none":
        write_synthetic_set(store, "bugs@tiny", X, y, CLASSES, split=split)
    kind = kw.pop("kind", "logistic")
    with pytest.raises(error, match=message):
        fit_head(kind, ["bugs@tiny"], store=str(store), emissions=False, **kw)
    assert not (store / "heads").exists() or not [
        p for p in (store / "heads").iterdir() if not p.name.startswith(".")
    ]


def test_named_heads(blob_store):
    (r,) = fit(blob_store, name="bugs-logistic")
    assert r.head_id == "bugs-logistic"
    with pytest.raises(HeadError, match="head bugs-logistic exists already"):
        fit(blob_store, name="bugs-logistic")
    ids = sorted(x.head_id for x in fit(blob_store, "all", name="cmp", epochs=2))
    assert ids == ["cmp-dense", "cmp-knn", "cmp-logistic", "cmp-svm"]


def test_train_accuracy_is_recorded(blob_store):
    (r,) = fit(blob_store, "knn")
    assert r.metrics["train"]["n"] == 63 and r.metrics["train"]["accuracy"] == 1.0  # distance-weighted knn
    assert r.summary()["train_accuracy"] == 1.0


def test_a_split_too_small_for_every_class_is_a_clear_error():
    from featstore.data.options import SplitOptions
    from featstore.data.splits import make_split
    from featstore.errors import DatasetError

    labels = np.repeat([0, 1, 2], 4)
    with pytest.raises(DatasetError, match="stratified validation split of 7 images .* --val-size"):
        make_split(labels, [""] * 12, ["a", "b", "c"], SplitOptions(test_size=0.34, val_size=0.1))
    split = make_split(labels, [""] * 12, ["a", "b", "c"], SplitOptions(test_size=0.34, val_size=0.25))
    assert (len(split.train), len(split.val), len(split.test)) == (4, 3, 5)


def test_heads_fit_on_a_handful_of_images(tmp_path):
    X, y = blobs(n_per_class=4, n_classes=3, n_features=6, seed=2)
    write_synthetic_set(tmp_path, "few@bb", X, y, ["a", "b", "c"])
    for kind in ("logistic", "knn"):  # a C grid with 1-2 images per class; k=10 above 4 rows
        (r,) = fit_head(kind, ["few@bb"], store=str(tmp_path), test_size=0.34, val_size=0.25, emissions=False)
        assert r.split["n_train"] == 4 and 0 <= r.metrics["test"]["accuracy"] <= 1
    with pytest.raises(HeadError, match="at least 2 training images of every class"):
        fit_head("svm", ["few@bb"], store=str(tmp_path), test_size=0.34, val_size=0.25, emissions=False)
