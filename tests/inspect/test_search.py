"""Search by image: a resized copy of a stored image finds its original first; stored queries take
their stored features; exact search in blocks equals brute force; FAISS agrees with it; every bad
query is one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from featstore import Store
from featstore.errors import DatasetError, InvalidOptionError, StoreError, UnknownFeatureSetError
from featstore.inspect.options import SearchOptions
from featstore.inspect.search import exact_search, search
from featstore.inspect.sets import normalise_rows, open_set, unit_features
from featstore_cli.app import app

runner = CliRunner()


@pytest.fixture(scope="module")
def searched(tmp_path_factory, tiny_onnx):
    """A store with the features of 24 photos (3 classes) made by the tiny backbone."""
    from conftest import make_class_folders

    root = tmp_path_factory.mktemp("search")
    photos = make_class_folders(root / "photos", classes=("a", "b", "c"), n_per_class=8)
    s = Store(root / "store", emissions=False)
    s.extract(photos, str(tiny_onnx))
    return s, photos, "photos@tiny"


def test_a_resized_copy_finds_its_original_first(searched, tmp_path):
    s, photos, name = searched
    original = photos / "b" / "b3.jpg"
    copy = tmp_path / "copy.png"
    with Image.open(original) as img:
        img.resize((48, 40), Image.Resampling.BICUBIC).save(copy)
    result = s.search(name, [copy, photos / "a" / "a1.jpg"], k=5)
    first, stored = result.queries
    assert not first["in_set"] and first["matches"][0]["path"] == "b/b3.jpg"
    assert first["matches"][0]["similarity"] > 0.99 and first["matches"][0]["label"] == "b"
    assert stored["in_set"] and stored["matches"][0] == {
        **stored["matches"][0],
        "rank": 1,
        "path": "a/a1.jpg",
        "similarity": pytest.approx(1.0, abs=1e-5),
    }
    sims = [m["similarity"] for m in first["matches"]]
    assert sims == sorted(sims, reverse=True) and len(sims) == 5 and result.method == "exact"


def test_exact_search_in_blocks_equals_brute_force(searched):
    s, _, name = searched
    data = open_set(s.layout, name)
    X = unit_features(s.layout, data)
    q = normalise_rows(np.random.default_rng(0).normal(size=(3, X.shape[1])).astype(np.float32))
    sims, idx = exact_search(s.layout, data, q, 7, chunk_rows=5)
    want = np.argsort(-(q @ X.T), axis=1, kind="stable")[:, :7]
    assert np.allclose(sims, np.take_along_axis(q @ X.T, want, 1), atol=1e-6)
    assert np.array_equal(np.sort(idx, 1), np.sort(want, 1))
    many, rows = exact_search(s.layout, data, q, 100)  # more than the set holds
    assert (rows[:, len(data) :] == -1).all() and (rows[:, : len(data)] >= 0).all()


def test_faiss_finds_what_exact_search_finds(searched):
    pytest.importorskip("faiss")
    s, photos, name = searched
    queries = [photos / "c" / f"c{i}.jpg" for i in range(4)]
    exact = search(name, queries, SearchOptions(k=3, method="exact"), store=s.layout)
    fast = search(name, queries, SearchOptions(k=3, method="faiss"), store=s.layout)
    assert fast.method == "faiss" and (s.layout.root / "indexes" / f"{name}.faiss").is_file()
    for a, b in zip(exact.queries, fast.queries, strict=True):
        assert a["matches"][0]["path"] == b["matches"][0]["path"]
    again = search(name, queries[:1], SearchOptions(k=3, method="faiss"), store=s.layout)  # the kept index
    assert again.queries[0]["matches"] == fast.queries[0]["matches"]


def test_cli_search_tables_and_page(searched, tmp_path):
    s, photos, name = searched
    page = tmp_path / "m.html"
    args = ["search", "--features", name, "--image", str(photos / "a" / "a2.jpg"), "--store", str(s.root)]
    out = runner.invoke(app, [*args, "--k", "2", "--json", "--html", str(page)])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert doc["queries"][0]["matches"][0]["path"] == "a/a2.jpg" and len(doc["queries"][0]["matches"]) == 2
    html = page.read_text()
    assert html.count("<figure>") == 3 and html.count("data:image/jpeg;base64,") == 3
    csv = runner.invoke(app, [*args, "--csv"])
    assert csv.stdout.splitlines()[0].startswith("query,rank,similarity,label,split,path")


def test_bad_queries_are_one_line(searched, tmp_path):
    s, photos, name = searched
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(DatasetError, match="cannot read query image .*missing.jpg"):
        s.search(name, tmp_path / "missing.jpg")
    with pytest.raises(DatasetError, match="bad.jpg: not an image"):
        s.search(name, tmp_path / "bad.jpg")
    with pytest.raises(UnknownFeatureSetError):
        s.search("nope@tiny", photos / "a" / "a1.jpg")
    with pytest.raises(InvalidOptionError, match="k: must be a whole number"):
        s.search(name, photos / "a" / "a1.jpg", k=0)
    out = runner.invoke(
        app, ["search", "--features", name, "--image", str(tmp_path / "bad.jpg"), "--store", str(s.root)]
    )
    assert out.exit_code == 1 and out.output.strip().splitlines()[-1].startswith("Error: query ")


def test_a_missing_backbone_is_named(searched, tmp_path):
    import shutil

    s, _, name = searched
    copy = tmp_path / "store"
    shutil.copytree(s.root, copy)
    for f in (copy / "backbones").glob("*.onnx"):
        f.unlink()
    new = tmp_path / "new.png"
    Image.new("RGB", (20, 20), (200, 10, 10)).save(new)
    with pytest.raises(StoreError, match="run the featstore extract that made the set again"):
        Store(copy).search(name, new)
