"""An "unknown" answer: `score --reject-below P` or `--target-precision T` writes `unknown` where
the head is not sure, records the threshold, and `export --reject-below P` carries it in the
ONNX file as a `label` output (-1: unknown)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from conftest import copy_store, via_store
from test_deploy import _pixels, make_colour_folders
from typer.testing import CliRunner

from featstore.errors import InvalidOptionError
from featstore.heads.thresholds import threshold_for_precision
from featstore.scoring.deploy import export_head
from featstore.scoring.tables import read_predictions
from featstore.store.layout import resolve_store
from featstore.store.runlog import read_records
from featstore_cli.app import app

extract = via_store("extract")
fit_head = via_store("fit_head")
score = via_store("score")


def test_the_lowest_threshold_that_reaches_the_precision():
    proba = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4], [0.55, 0.45]])
    y = np.array([0, 0, 1, 0, 1])  # right, right, wrong, right, wrong (best first)
    assert threshold_for_precision(proba, y, 1.0) == (0.8, 1.0, 0.4)
    value, precision, coverage = threshold_for_precision(proba, y, 0.75)
    assert (value, precision, coverage) == (0.6, 0.75, 0.8)
    with pytest.raises(InvalidOptionError, match="no threshold reaches precision 1 .*"):
        threshold_for_precision(proba, np.array([1, 0, 0, 0, 0]), 1.0)


@pytest.fixture(scope="module")
def colours(tmp_path_factory, tiny_onnx):
    root = tmp_path_factory.mktemp("unknown")
    photos = make_colour_folders(root / "colours", n_per_class=20)
    store = root / "store"
    extract(str(photos), str(tiny_onnx), store=str(store), emissions=False)
    fit_head("svm", ["colours@tiny"], store=str(store), emissions=False, name="svm100", select="val", C=100.0)
    fit_head("svm", ["colours@tiny"], store=str(store), emissions=False, name="svm-cv", select="cv", C=100.0)
    return store, photos


def test_score_writes_unknown_below_the_threshold_and_records_it(tmp_path, colours):
    src, photos = colours
    store = copy_store(src, tmp_path / "store")
    plain = score(str(photos), str(tmp_path / "p.jsonl"), head="svm100", store=str(store), emissions=False)
    probs = sorted(r["probability"] for r in read_predictions(tmp_path / "p.jsonl"))
    cut = float(np.median(probs))
    r = score(
        str(photos),
        str(tmp_path / "u.csv"),
        head="svm100",
        store=str(store),
        emissions=False,
        reject_below=cut,
    )
    rows = read_predictions(tmp_path / "u.csv")
    unknown = [row for row in rows if row["prediction"] == "unknown"]
    assert plain.n_unknown == 0 and r.n_unknown == len(unknown) == sum(p < cut for p in probs) > 0
    assert all(row["probability"] < cut and row["top_k"][0]["class"] != "unknown" for row in unknown)
    records, _ = read_records(resolve_store(store))
    assert records[-1].threshold == {
        "value": cut, "target": None, "precision": None, "coverage": None, "n": None, "source": None
    } and records[-1].counts["n_unknown"] == r.n_unknown  # fmt: skip
    import pyarrow.parquet as pq

    kw = {"head": "svm100", "store": str(store), "emissions": False}
    score(str(photos), str(tmp_path / "u.parquet"), reject_below=cut, **kw)
    score(str(photos), str(tmp_path / "p.parquet"), **kw)
    assert float(pq.read_schema(tmp_path / "u.parquet").metadata[b"reject_below"]) == cut
    assert b"reject_below" not in pq.read_schema(tmp_path / "p.parquet").metadata


def test_a_target_precision_is_chosen_on_held_out_images(tmp_path, colours):
    src, photos = colours
    store = copy_store(src, tmp_path / "store")
    runner = CliRunner()
    args = ["score", "--input", str(photos), "--store", str(store), "--no-emissions"]
    on_val = runner.invoke(
        app, [*args, "--head", "svm100", "-o", str(tmp_path / "v.csv"), "--target-precision", "0.9"]
    )
    assert on_val.exit_code == 0, on_val.output
    assert "chosen for precision 0.9 on 6 validation images" in on_val.stderr
    assert " unknown: rows below probability " in on_val.stdout
    by_folds = runner.invoke(
        app,
        [*args, "--head", "svm-cv", "-o", str(tmp_path / "f.csv"), "--target-precision", "0.9", "--json"],
    )
    assert by_folds.exit_code == 0, by_folds.output
    doc = json.loads(by_folds.stdout)
    assert doc["threshold"]["source"].startswith("training images, predicted out of fold (5 folds)")
    assert doc["threshold"]["precision"] >= 0.9 and doc["threshold"]["n"] == 48
    for extra, message in [
        (["--reject-below", "1.5"], "Error: --reject-below: must be a probability between 0 and 1, not 1.5"),
        (
            ["--reject-below", "0.5", "--target-precision", "0.9"],
            "Error: --reject-below: give a threshold or",
        ),
        (["--target-precision", "1.0", "--head", "svm-cv"], None),
    ]:
        cmd = [*args, "-o", str(tmp_path / "x.csv"), *extra]
        cmd += [] if "--head" in extra else ["--head", "svm100"]
        out = runner.invoke(app, cmd)
        if message is None:  # a precision no threshold reaches, or reached: never a traceback
            assert out.exit_code in (0, 1) and "Traceback" not in out.output
            continue
        assert out.exit_code == 1 and out.stderr.startswith(message), out.output
        assert not (tmp_path / "x.csv").exists()


def test_export_carries_the_threshold_as_a_label_output(tmp_path, colours):
    import onnxruntime as ort

    src, photos = colours
    store = copy_store(src, tmp_path / "store")
    _, pixels = _pixels(photos, 16)
    export_head("svm100", tmp_path / "plain.onnx", store=str(store))
    plain = ort.InferenceSession(str(tmp_path / "plain.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in plain.get_outputs()] == ["probabilities"]  # no threshold, no label
    cut = float(np.median(plain.run(["probabilities"], {"pixels": pixels})[0].max(axis=1)))
    result = export_head("svm100", tmp_path / "m.onnx", store=str(store), reject_below=cut)
    assert result.max_abs_diff < 1e-4
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert json.loads(meta["reject_below"]) == cut and "-1 (unknown)" in meta["label"]
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    proba, label = sess.run(["probabilities", "label"], {"pixels": pixels})
    want = np.where(proba.max(axis=1) < np.float32(cut), -1, proba.argmax(axis=1))
    assert label.dtype == np.int64 and label.shape == (len(pixels),) and (label == want).all()
    assert (label == -1).any() and (label >= 0).any()
    with pytest.raises(InvalidOptionError, match="reject_below: must be a probability"):
        export_head("svm100", tmp_path / "n.onnx", store=str(store), reject_below=0)


def test_a_head_with_a_class_named_unknown_refuses_a_threshold(tmp_path, tiny_onnx):
    photos = make_colour_folders(tmp_path / "things", classes=("unknown", "dog", "eel"), n_per_class=10)
    store = str(tmp_path / "store")
    extract(str(photos), str(tiny_onnx), store=store, emissions=False)
    (head,) = fit_head("knn", ["things@tiny"], store=store, emissions=False, select="val")
    with pytest.raises(InvalidOptionError, match="reject_below: the head has a class named 'unknown'"):
        score(
            str(photos),
            str(tmp_path / "p.csv"),
            head=head.head_id,
            store=store,
            emissions=False,
            reject_below=0.5,
        )
    assert not (tmp_path / "p.csv").exists()
