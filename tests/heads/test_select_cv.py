"""Choosing a sweep's settings by cross-validation: where the validation part ties (and the
overconfident setting wins the tie on log loss), the folds tell the settings apart; the chosen
settings are refitted on training and validation and scored once on test."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import blobs, write_synthetic_set
from typer.testing import CliRunner

from featstore import Store, sweep
from featstore.data.options import SplitOptions
from featstore.errors import InvalidOptionError
from featstore.heads.params import SweepOptions
from featstore.options import JobOptions
from featstore.reporter import Reporter
from featstore.store.head_files import read_meta
from featstore.store.layout import resolve_store
from featstore_cli.app import app

GRID = {"knn": {"k": [1]}, "logistic": {"C": [1.0]}}
#: 6 validation images, where knn k=1 and logistic both score 1.0 (seed found by trying 0-3)
SPLIT = SplitOptions(test_size=0.5, val_size=0.05, seed=0)


@pytest.fixture
def noisy(tmp_path):
    X, y = blobs(n_per_class=40, seed=3)
    X += np.random.default_rng(3).normal(0, 4, X.shape).astype(np.float32)
    write_synthetic_set(tmp_path / "store", "bugs@tiny", X, y, ["ant", "bee", "cow"])
    return tmp_path / "store"


def _sweep(store, select: str, **kw):
    options = SweepOptions(grid=GRID, select=select, **kw)
    return sweep(["bugs@tiny"], options=options, split=SPLIT, job=JobOptions(str(store), emissions=False))


def test_validation_ties_and_cross_validation_breaks_them(noisy):
    on_val = _sweep(noisy, "val")
    assert [r["val_accuracy"] for r in on_val.rows] == [1.0, 1.0]  # a tie on 6 images
    assert on_val.rows[0]["setting"] == "knn k=1"  # k=1's certainty wins the tie on log loss
    by_cv = _sweep(noisy, "cv")
    best = by_cv.rows[0]
    assert best["setting"] == "logistic C=1" and best["chosen"] == "best"
    assert best["cv_accuracy"] > by_cv.rows[1]["cv_accuracy"] and best["cv_std"] is not None
    assert best["test_accuracy"] > on_val.rows[0]["test_accuracy"]  # 0.95 against 0.933
    layout = resolve_store(noisy)
    meta = read_meta(layout, best["head_id"])
    assert meta["sweep"]["cv"]["accuracy"] == best["cv_accuracy"] and "val" not in meta["metrics"]
    assert meta["split"]["n_val"] == 0 and meta["split"]["n_train"] == 60 + 0  # train and val, refitted
    table = json.loads(open(by_cv.path).read())
    folds = table["cv"]["bugs@tiny"]
    assert table["select"] == "cv" and (folds["folds"], folds["repeats"]) == (5, 2)
    assert len(folds["assignment"]) == 60 and all(len(v) == 2 for v in folds["assignment"].values())
    assert "cross-validation repeated 2 times" in by_cv.notes[-1]


def test_cross_validation_options_are_checked(noisy, tmp_path):
    with pytest.raises(InvalidOptionError, match="select: must be one of auto, val, cv"):
        _sweep(noisy, "folds")
    with pytest.raises(InvalidOptionError, match="cv_folds"):
        _sweep(noisy, "cv", cv_folds=1)
    runner = CliRunner()
    args = ["fit-head", "sweep", "--features", "bugs@tiny", "--store", str(noisy), "--no-emissions"]
    (tmp_path / "grid.json").write_text(json.dumps(GRID))
    args += ["--grid", str(tmp_path / "grid.json")]
    out = runner.invoke(
        app, [*args, "--select", "cv", "--cv-folds", "3", "--cv-repeats", "1", "--test-size", "0.5"]
    )
    assert out.exit_code == 0, out.output
    header = out.stdout.splitlines()[0].split()
    assert "cv_accuracy" in header and "val_accuracy" not in header
    one = runner.invoke(
        app,
        [
            "fit-head",
            "logistic",
            "-f",
            "bugs@tiny",
            "--select",
            "cv",
            "--store",
            str(noisy),
            "--no-emissions",
        ],
    )
    assert one.exit_code == 0, one.output
    header = one.stdout.splitlines()[0].split()
    assert "cv_accuracy" in header and "cv_std" in header and "val_accuracy" not in header
    assert "test_ece" in header


def test_auto_chooses_by_cross_validation_when_validation_is_small(noisy):
    job = JobOptions(str(noisy), emissions=False)
    r = sweep(["bugs@tiny"], options=SweepOptions(grid=GRID), split=SPLIT, job=job)
    assert r.notes[0] == "--select auto chose cv: the validation part has 6 images (< 1000)"
    assert r.rows[0]["cv_accuracy"] is not None and json.loads(open(r.path).read())["asked"] == "auto"
    # fit-head all ranks its heads the same way, and says so; one head alone is scored on validation
    notes = []
    store = Store(noisy, emissions=False, reporter=Reporter(log=notes.append))
    heads = store.fit_head("all", "bugs@tiny", test_size=0.5, val_size=0.05, epochs=1, hidden=[8])
    assert notes[0].startswith("--select auto chose cv") and all(h.cv for h in heads)
    cvs = [h.cv["accuracy"] for h in heads]
    assert cvs == sorted(cvs, reverse=True) and all(h.split["n_val"] == 0 for h in heads)
    assert read_meta(resolve_store(noisy), heads[0].head_id)["cv"]["folds"] == 5
    (one,) = store.fit_head("knn", "bugs@tiny", test_size=0.5, val_size=0.05)
    assert one.cv is None and one.split["n_val"] == 6
    assert 0 <= one.metrics["test"]["ece"] <= 1 and one.metrics["test"]["reliability"]


def test_sets_of_the_same_images_are_chosen_among_on_the_same_folds(tmp_path):
    """Two input sizes of one backbone are two feature sets of the same images (rows in another
    order): each image keeps its fold in both, and their join, so the choice among them is fair."""
    X, y = blobs(n_per_class=20, seed=4)
    store = tmp_path / "s"
    digests = [f"{i:064x}" for i in range(len(y))]
    write_synthetic_set(store, "bugs@net-224px", X, y, ["ant", "bee", "cow"], digests=digests)
    order = np.random.default_rng(0).permutation(len(y))
    sharper = X[order] + np.random.default_rng(1).normal(0, 0.5, X.shape).astype(np.float32)
    write_synthetic_set(
        store, "bugs@net-320px", sharper, y[order], ["ant", "bee", "cow"], backbone_digest="c" * 64,
        digests=[digests[i] for i in order],
    )  # fmt: skip
    r = Store(store, emissions=False).sweep(
        ["bugs@net-224px", "bugs@net-320px"], grid={"logistic": {"C": [1.0]}}, select="cv"
    )
    folds = json.loads(open(r.path).read())["cv"]
    assert set(folds) == {"bugs@net-224px", "bugs@net-320px", "bugs@net-224px+bugs@net-320px"}
    first, *others = (f["assignment"] for f in folds.values())
    assert all(other == first for other in others) and len(first) == 48
    assert {row["features"] for row in r.rows} == set(folds) and r.rows[0]["chosen"] == "best"
