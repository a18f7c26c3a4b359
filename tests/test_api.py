"""The Python API: a Store whose methods mirror the CLI, arrays out, the same option names."""

from __future__ import annotations

import numpy as np
import pytest

import featstore
from featstore.errors import InvalidOptionError


@pytest.fixture
def api_store(tmp_path, photos, tiny_onnx):
    store = featstore.Store(tmp_path / "store", emissions=False)
    store.extract(photos, backbone=str(tiny_onnx), augment="flip", copies=2)
    return store


def test_feature_sets_come_back_as_arrays_and_frames(api_store):
    fs = api_store.feature_set("photos@tiny")
    X, y = fs.to_numpy()
    assert X.shape == (8, 8) and X.dtype == np.float32 and sorted(set(y)) == [0, 1]
    assert fs.to_numpy(views=True)[0].shape == (24, 8)
    frame = fs.to_pandas()
    assert list(frame.columns[:6]) == ["path", "label", "class", "split", "digest", "view"]
    assert frame.shape == (8, 6 + 8) and set(frame["class"]) == {"cat", "dog"}
    assert [i.name for i in api_store.feature_sets()] == ["photos@tiny"]


def test_heads_predict_arrays_and_the_report_sees_every_call(api_store, photos):
    [result] = api_store.fit_head("logistic", "photos@tiny", name="h", test_size=0.25, val_size=0.25)
    predictions = api_store.head("h").predict(sorted(photos.rglob("*.jpg")), batch_size=3)
    assert predictions.proba.shape == (8, 2) and np.allclose(predictions.proba.sum(axis=1), 1)
    assert predictions.class_names == ["cat", "dog"] == api_store.head("h").class_names
    assert api_store.evaluate("h", "photos@tiny").n_rows == 8
    rows = api_store.report().rows
    assert {r.method for r in rows} == {"extract", "frozen features + head", "evaluate"}
    assert result.head_id == "h" and [h["head_id"] for h in api_store.heads()] == ["h"]


def test_options_are_named_like_the_library_keywords(api_store, photos, tiny_onnx):
    with pytest.raises(InvalidOptionError, match="^batch: unknown option; valid ones: augment"):
        api_store.extract(photos, backbone=str(tiny_onnx), batch=3)
    with pytest.raises(InvalidOptionError, match="^store: is the Store's own root"):
        api_store.extract(photos, backbone=str(tiny_onnx), store="elsewhere")
    api_store.fit_head("logistic", "photos@tiny", name="h2", test_size=0.25, val_size=0.25)
    with pytest.raises(InvalidOptionError, match="^batch_size: must be a whole number"):
        api_store.head("h2").predict(photos, batch_size=0)
    assert "Store" in dir(featstore) and "predict" in dir(featstore)
