"""Ensembles: the soft vote of saved heads on the same features, saved as a head of kind
`ensemble` that loads, evaluates and counts like any other; what cannot vote together."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import blobs, via_store, write_synthetic_set

from featstore.errors import HeadError, InvalidOptionError, StoreMismatchError, UnknownHeadError
from featstore.heads.ensemble import EnsembleHead
from featstore.heads.registry import feature_kinds, get_head_kind, kinds_of, trainable_params
from featstore.store.head_files import list_heads, load_head, read_meta
from featstore.store.layout import resolve_store
from featstore.store.runlog import FitRecord, read_records

CLASSES = ["ant", "bee", "cow"]
fit_head, evaluate, fit_ensemble = via_store("fit_head"), via_store("evaluate"), via_store("ensemble")


@pytest.fixture
def members(tmp_path):
    """A store with bugs@tiny and three heads on it: logistic `lo`, knn `kn`, svm `sv`."""
    X, y = blobs(n_per_class=20, seed=8)
    X += np.random.default_rng(3).normal(0, 3, X.shape).astype(np.float32)
    store = tmp_path / "store"
    write_synthetic_set(store, "bugs@tiny", X, y, CLASSES)
    for kind, name in (("logistic", "lo"), ("knn", "kn"), ("svm", "sv")):
        fit_head(kind, ["bugs@tiny"], store=str(store), emissions=False, name=name)
    return store, X


def test_the_soft_vote_is_the_mean_of_the_members(members):
    store, X = members
    r = fit_ensemble(["lo", "kn", "sv"], name="vote", store=str(store))
    layout = resolve_store(store)
    est, meta = load_head(layout, "vote")
    parts = [load_head(layout, h)[0].predict_proba(X) for h in ("lo", "kn", "sv")]
    np.testing.assert_allclose(est.predict_proba(X), np.mean(parts, axis=0), atol=1e-12)
    assert (
        isinstance(est, EnsembleHead)
        and meta["config"]["kind"] == "ensemble"
        and meta["members"] == ["lo", "kn", "sv"]
    )
    assert meta["config"]["weights"] == [0.333333] * 3 and meta["config"]["voting"] == "soft"
    assert [m["kind"] for m in meta["config"]["members"]] == ["logistic", "knn", "svm"]
    assert meta["split"] == read_meta(layout, "lo")["split"]  # the members' own split
    assert json.loads((layout.heads / "vote" / "split.json").read_text()) == json.loads(
        (layout.heads / "lo" / "split.json").read_text()
    )
    assert r.metrics["test"]["n"] == 12 and r.kind == "ensemble"
    assert next(h for h in list_heads(layout) if h["head_id"] == "vote")["kind"] == "ensemble"
    ev = evaluate("vote", ["bugs@tiny"], store=str(store))
    assert ev.n_rows == 60
    records, _ = read_records(layout)
    fit = next(rec for rec in records if isinstance(rec, FitRecord) and rec.head_id == "vote")
    assert fit.kind == "ensemble" and fit.command == "fit-head"
    shutil.rmtree(layout.heads / "lo")  # the members live inside the ensemble
    np.testing.assert_allclose(
        load_head(layout, "vote")[0].predict_proba(X), np.mean(parts, axis=0), atol=1e-12
    )


def test_an_ensemble_with_a_dense_member_saves_its_network(tmp_path):
    X, y = blobs(n_per_class=15, seed=9)
    store = tmp_path / "s"
    write_synthetic_set(store, "bugs@tiny", X, y, CLASSES)
    fit_head("dense", ["bugs@tiny"], store=str(store), emissions=False, name="de", epochs=2, hidden=(8,))
    fit_head("logistic", ["bugs@tiny"], store=str(store), emissions=False, name="lo")
    fit_ensemble(["de", "lo"], name="mix", store=str(store))
    layout = resolve_store(store)
    meta = read_meta(layout, "mix")
    assert set(meta["files_sha256"]) == {"member0/model.keras", "model.skops"}
    est, _ = load_head(layout, "mix")
    want = (load_head(layout, "de")[0].predict_proba(X) + load_head(layout, "lo")[0].predict_proba(X)) / 2
    np.testing.assert_allclose(est.predict_proba(X), want, atol=1e-6)
    assert trainable_params(meta) == (12 * 8 + 8 + 9 * 3) + 13 * 3  # dense and logistic weights added up


def test_the_ensemble_kind_is_made_not_fitted(members):
    store, _ = members
    assert "ensemble" not in [k.name for k in feature_kinds()] and get_head_kind("ensemble").to_onnx
    with pytest.raises(
        HeadError, match=r"^ensemble heads are made from saved heads, not fitted on features: "
    ):
        kinds_of("ensemble")
    results = fit_head("all", ["bugs@tiny"], store=str(store), emissions=False, epochs=2)
    assert sorted(r.kind for r in results) == ["dense", "knn", "logistic", "svm"]


def _other_split(store):
    fit_head("knn", ["bugs@tiny"], store=str(store), emissions=False, name="kn2", seed=5)


@pytest.mark.parametrize(
    "heads,setup,error,message",
    [
        (["lo"], None, InvalidOptionError, "^heads: an ensemble needs at least 2 heads, not 1$"),
        (["lo", "lo"], None, InvalidOptionError, "^heads: lists a head twice: lo, lo$"),
        (["lo", "gone"], None, UnknownHeadError, "^no head 'gone'"),
        (["lo", "kn2"], _other_split, HeadError, "^heads lo and kn2 were fitted on different splits"),
        (
            ["lo", "ot"],
            "other_set",
            StoreMismatchError,
            r"^heads lo \(bugs@tiny\) and ot \(bugs@other\) were fitted on different feature sets",
        ),
        (["lo", "vote"], "vote", HeadError, "^head vote is an ensemble already; list its members instead$"),
    ],
)
def test_heads_that_cannot_vote_together(members, heads, setup, error, message):
    store, X = members
    if setup == "other_set":
        write_synthetic_set(
            store, "bugs@other", X[:, :6], np.repeat(np.arange(3), 20), CLASSES, backbone_digest="c" * 64
        )
        fit_head("knn", ["bugs@other"], store=str(store), emissions=False, name="ot")
    elif setup == "vote":
        fit_ensemble(["lo", "kn"], name="vote", store=str(store))
    elif setup is not None:
        setup(store)
    before = {h["head_id"] for h in list_heads(resolve_store(store))}
    with pytest.raises(error, match=message):
        fit_ensemble(heads, name="bad", store=str(store))
    assert {h["head_id"] for h in list_heads(resolve_store(store))} == before


def test_a_taken_name_is_refused(members):
    store, _ = members
    with pytest.raises(HeadError, match="^head lo exists already"):
        fit_ensemble(["kn", "sv"], name="lo", store=str(store))
