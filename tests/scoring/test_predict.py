"""`predict`: a head's probabilities as arrays, the same as the table `score` writes."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_class_folders, via_store

from featstore.data.decode import decode_image
from featstore.errors import InvalidOptionError
from featstore.inference.options import InferenceOptions
from featstore.scoring.arrays import predict
from featstore.scoring.jobs import list_inputs
from featstore.scoring.tables import read_predictions


def _table_proba(path, classes) -> np.ndarray:
    rows = read_predictions(path)
    return np.array([[{t["class"]: t["probability"] for t in r["top_k"]}[c] for c in classes] for r in rows])


score = via_store("score")


def test_predict_gives_the_probabilities_of_the_table_and_writes_nothing(tmp_path, scoring_store):
    store, photos = scoring_store
    before = sorted(p.relative_to(store) for p in store.rglob("*"))
    proba, classes, errors, paths = predict("logi", photos, store=store)
    assert proba.shape == (45, 3) and proba.dtype == np.float32 and classes == ["cat", "dog", "eel"]
    assert errors == [None] * 45 and paths == [it.rel for it in list_inputs(photos)[0]]
    np.testing.assert_allclose(proba.sum(axis=1), 1, atol=1e-6)
    assert sorted(p.relative_to(store) for p in store.rglob("*")) == before
    score(str(photos), str(tmp_path / "p.jsonl"), head="logi", store=str(store), top_k=3, emissions=False)
    np.testing.assert_allclose(proba, _table_proba(tmp_path / "p.jsonl", classes), rtol=0, atol=1e-6)
    computed = predict("logi", photos, store=store, use_store=False, inference=InferenceOptions(batch_size=7))
    np.testing.assert_allclose(computed.proba, proba, rtol=0, atol=1e-6)


def test_a_list_of_paths_keeps_its_order_and_bad_files_are_nan_rows(tmp_path, scoring_store):
    store, _ = scoring_store
    new = make_class_folders(tmp_path / "new", classes=("x",), n_per_class=2, seed=7)
    (new / "x" / "broken.jpg").write_bytes(b"\xff\xd8\xff truncated")
    paths = [
        new / "x" / "x1.jpg",
        new / "x" / "broken.jpg",
        new / "gone.jpg",
        new / "x" / "x0.jpg",
        new / "x" / "x1.jpg",
    ]
    got = predict("logi", paths, store=store)
    assert got.proba.shape == (5, 3) and got.paths == [str(p) for p in paths]
    assert [e is None for e in got.errors] == [True, False, False, True, True]
    assert np.isnan(got.proba[1:3]).all() and not np.isnan(got.proba[[0, 3, 4]]).any()
    np.testing.assert_array_equal(got.proba[0], got.proba[4])
    empty = predict("logi", [], store=store)
    assert empty.proba.shape == (0, 3) and empty.errors == [] and empty.paths == []


def test_pixel_arrays_give_the_probabilities_of_their_files(tmp_path, scoring_store):
    store, photos = scoring_store
    files = [it.path for it in list_inputs(photos)[0]][:6]
    pixels = np.stack([decode_image(f.read_bytes(), 16, "squash") for f in files])
    from_pixels = predict("logi", pixels, store=store)
    assert from_pixels.paths == [None] * 6 and from_pixels.errors == [None] * 6
    np.testing.assert_allclose(
        from_pixels.proba, predict("logi", files, store=store).proba, rtol=0, atol=1e-6
    )
    with pytest.raises(
        InvalidOptionError, match=r"images: a pixel array must be \(n_images, 16, 16, 3\) uint8"
    ):
        predict("logi", pixels.astype(np.float32), store=store)
    with pytest.raises(InvalidOptionError, match="batch_size: must be"):
        predict("logi", pixels, store=store, inference=InferenceOptions(batch_size=0))
