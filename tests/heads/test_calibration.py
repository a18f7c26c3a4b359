"""Calibrated probabilities: every head reports its expected calibration error; `--calibrate`
maps an over-confident head's probabilities through a map fitted on held-out predictions, which
lowers the error on test (its ONNX export: tests/scoring/test_calibrated_export.py)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import blobs, copy_store, via_store, write_synthetic_set
from typer.testing import CliRunner

from featstore import Store
from featstore.errors import InvalidOptionError
from featstore.heads.metrics import calibration
from featstore.store.head_files import load_head, read_meta
from featstore_cli.app import app

fit_head = via_store("fit_head")


def test_the_expected_calibration_error_of_known_probabilities():
    y = np.array([0, 0, 1, 1])
    sure = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])  # 3 of 4 right at probability 1
    assert calibration(y, sure)["ece"] == pytest.approx(0.25)
    assert calibration(y, sure)["reliability"] == [[0.9, 1.0, 4, 1.0, 0.75]]
    honest = np.array([[0.75, 0.25]] * 4)
    assert calibration(np.array([0, 0, 0, 1]), honest)["ece"] == pytest.approx(0.0)


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    root = tmp_path_factory.mktemp("calibrate") / "store"
    X, y = blobs(n_per_class=80, seed=2)
    X += np.random.default_rng(2).normal(0, 5, X.shape).astype(np.float32)
    write_synthetic_set(root, "bugs@tiny", X, y, ["ant", "bee", "cow"])
    return root


@pytest.mark.parametrize("method,select", [("temperature", "val"), ("sigmoid", "cv"), ("isotonic", "cv")])
def test_calibration_lowers_an_overconfident_heads_error(noisy, tmp_path, method, select):
    store = Store(copy_store(noisy, tmp_path / "s"), emissions=False)
    (head,) = store.fit_head("knn", "bugs@tiny", k=1, select=select, calibrate=method, val_size=0.2)
    estimator, meta = load_head(store.layout, head.head_id)
    record = meta["calibration"]
    assert meta["config"]["calibrate"] == method and record["method"] == method
    where = "validation images" if select == "val" else "out-of-fold predictions (5 folds x 2)"
    assert record["fitted_on"] == where
    assert head.metrics["test"]["ece"] < record["test_ece_before"]  # 1-nn says 1.0 and is often wrong
    proba = estimator.predict_proba(np.zeros((3, 12), np.float32))
    np.testing.assert_allclose(proba.sum(axis=1), 1)


def test_a_sweep_calibrates_the_heads_it_saves_and_bad_values_are_one_line(noisy, tmp_path):
    store = copy_store(noisy, tmp_path / "s")
    grid = {"knn": {"k": [1]}, "logistic": {"C": [1.0]}}
    r = Store(store, emissions=False).sweep("bugs@tiny", grid=grid, calibrate="temperature")
    assert all(
        read_meta(Store(store).layout, h.head_id)["calibration"]["method"] == "temperature" for h in r.heads
    )
    with pytest.raises(InvalidOptionError, match="calibrate: must be one of sigmoid, isotonic, temperature"):
        Store(store, emissions=False).fit_head("knn", "bugs@tiny", calibrate="platt")
    out = CliRunner().invoke(
        app,
        [
            "fit-head",
            "knn",
            "-f",
            "bugs@tiny",
            "--store",
            str(store),
            "--calibrate",
            "beta",
            "--no-emissions",
        ],
    )
    assert out.exit_code == 1 and out.stderr.startswith("Error: --calibrate: must be one of sigmoid")
