"""`draw_map`: a 2-D map of a feature set, coloured by class, misclassified images marked."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from conftest import blobs, via_store, write_synthetic_set

from featstore.deps import available
from featstore.errors import InvalidOptionError, MissingDependencyError, OutputExistsError
from featstore.inspect.maps import resolve_method
from featstore.inspect.options import TSNE_MAX_IMAGES, MapOptions

draw_map = via_store("inspect_map")


CLASSES = ["ant", "bee", "cow"]


def _set(store, name="bugs@tiny", flip=True):
    X, y = blobs(20, 3, 10)
    y = y.copy()
    if flip:
        y[3] = 2  # labelled cow, sits among the ants
    write_synthetic_set(store, name, X, y, CLASSES)
    return X, y


def _png(path) -> bytes:
    data = open(path, "rb").read()
    assert data.startswith(b"\x89PNG")
    return data


def test_pca_map_with_marks_output_and_coordinates(tmp_path):
    store = tmp_path / "s"
    _set(store)
    out = tmp_path / "maps" / "map.png"
    r = draw_map("bugs@tiny", out, store=str(store), emissions=False, method="pca")
    assert r.output == str(out) and _png(out) == _png(r.picture)
    s = r.summary
    assert s["method"] == "pca" and s["n_images"] == 60 and s["n_misclassified"] >= 1
    assert s["head"] == "logistic" and s["folds"] == 5
    ant = r.items[0]
    assert ant["class"] == "ant" and ant["n_images"] == 19 and [i["class"] for i in r.items] == CLASSES
    assert sum(i["n_misclassified"] for i in r.items) == s["n_misclassified"]
    with open(s["coordinates"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 60 and rows[3]["path"] == "cow/3.jpg" and rows[3]["label"] == "cow"
    assert rows[3]["predicted"] == "ant" and rows[3]["misclassified"] == "1"
    assert sum(int(row["misclassified"]) for row in rows) == s["n_misclassified"]
    assert r.options["crossval"]["head"] == "logistic"


def test_tsne_map_and_no_marks(tmp_path):
    store = tmp_path / "s"
    _set(store)
    r = draw_map("bugs@tiny", store=str(store), emissions=False, method="tsne", mark_misclassified=False)
    assert r.summary["method"] == "tsne" and r.summary["n_misclassified"] is None and r.output is None
    assert r.items[0] == {"class": "ant", "n_images": 19, "n_misclassified": None, "accuracy": None}
    assert "crossval" not in r.options
    _png(r.picture)


def test_unlabelled_set_gets_a_map_without_marks(tmp_path):
    store = tmp_path / "s"
    X, _ = blobs(10, 2, 6)
    write_synthetic_set(store, "u@tiny", X, [-1] * 20, ["a", "b"])
    r = draw_map("u@tiny", store=str(store), emissions=False, method="pca")
    assert r.notes == ["u@tiny has no labels: one colour, no misclassified marks"]
    assert r.items == [{"class": "(unlabelled)", "n_images": 20}]
    _png(r.picture)


def test_too_few_images_per_class_for_marks_is_a_note(tmp_path):
    store = tmp_path / "s"
    X, _ = blobs(6, 2, 6)
    write_synthetic_set(store, "few@tiny", X, [0] * 10 + [1] * 2, ["a", "b"])
    r = draw_map("few@tiny", store=str(store), emissions=False, method="pca")
    assert r.notes == [
        "no misclassified marks: class 'b' has 2 image(s); 5-fold cross-validation needs at least 5 per "
        "class (add images, or lower --folds to 2)"
    ]
    assert r.summary["n_misclassified"] is None


def test_tiny_sets_are_laid_out_with_pca(tmp_path):
    store = tmp_path / "s"
    write_synthetic_set(store, "t@tiny", np.eye(3, 5, dtype=np.float32), [0, 1, -1], ["a", "b"])
    r = draw_map("t@tiny", store=str(store), emissions=False, method="tsne")
    assert r.notes[0] == "3 images are too few for t-SNE: laid out with PCA"
    write_synthetic_set(store, "one@tiny", np.ones((1, 5), np.float32), [0], ["a"])
    r = draw_map("one@tiny", store=str(store), emissions=False)
    assert r.summary["n_images"] == 1
    _png(r.picture)


def test_existing_output_needs_overwrite(tmp_path):
    store = tmp_path / "s"
    _set(store)
    out = tmp_path / "map.png"
    out.write_bytes(b"mine")
    with pytest.raises(OutputExistsError, match="map.png exists; pass --overwrite"):
        draw_map("bugs@tiny", out, store=str(store), emissions=False, method="pca")
    assert out.read_bytes() == b"mine" and not (store / "runs.jsonl").exists()
    r = draw_map("bugs@tiny", out, store=str(store), emissions=False, method="pca", overwrite=True)
    assert _png(out) and r.output == str(out)


def test_methods(tmp_path):
    assert resolve_method("pca", 5) == "pca" and resolve_method("tsne", 10**6) == "tsne"
    if not available("umap"):
        assert resolve_method("auto", TSNE_MAX_IMAGES) == "tsne"
        assert resolve_method("auto", TSNE_MAX_IMAGES + 1) == "pca"
        with pytest.raises(MissingDependencyError, match=r'pip install "featstore\[umap\]"'):
            resolve_method("umap", 10)
    else:
        assert resolve_method("auto", 10) == "umap"
    with pytest.raises(InvalidOptionError, match="method: must be one of auto, umap, tsne, pca"):
        MapOptions(method="mds").check()
    with pytest.raises(InvalidOptionError, match="perplexity"):
        draw_map("x@y", store=str(tmp_path), perplexity=0)


def test_one_class_gets_a_map_without_marks(tmp_path):
    store = tmp_path / "s"
    X, _ = blobs(10, 1, 6)
    write_synthetic_set(store, "one@tiny", X, [0] * 10, ["a"])
    r = draw_map("one@tiny", store=str(store), emissions=False, method="pca")
    assert r.notes == [
        "no misclassified marks: cross-validated predictions need at least 2 classes with images; "
        "this feature set has only 'a'"
    ]


def test_umap_when_installed(tmp_path):
    pytest.importorskip("umap")
    store = tmp_path / "s"
    _set(store)
    r = draw_map("bugs@tiny", store=str(store), emissions=False, method="umap", mark_misclassified=False)
    assert r.summary["method"] == "umap"
    _png(r.picture)
