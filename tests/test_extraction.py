"""`extract` end to end on real image files, a real ONNX backbone and real HDF5 files."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from conftest import TINY_PX, write_image

from featstore.errors import DatasetError, StoreError, StoreMismatchError
from featstore.extraction import extract
from featstore.layout import resolve_store
from featstore.runs import read_runs
from featstore.runtime import open_session
from featstore.store import open_feature_set


def run(data, store, backbone, **kw):
    kw.setdefault("emissions", False)
    return extract(str(data), str(backbone), store=str(store), **kw)


def features_by_path(store, name):
    with open_feature_set(resolve_store(store), name) as r:
        rows = r.rows()
        return dict(zip(rows.paths, r.read_features(), strict=True)), rows


def test_first_run_stores_every_image(photos, store, tiny_onnx):
    r = run(photos, store, tiny_onnx)
    assert r.feature_set == "photos@tiny"
    assert (r.n_images, r.n_computed, r.n_reused, r.n_skipped) == (8, 8, 0, 0)
    assert r.written and r.n_features == 8 and r.device == "cpu"
    feats, rows = features_by_path(store, "photos@tiny")
    assert rows.paths == sorted(rows.paths)
    assert list(rows.labels) == [0] * 4 + [1] * 4
    # stored features are the backbone's output on the decoded pixels
    from featstore.images import decode_image

    session = open_session(tiny_onnx, device="cpu")
    px = decode_image((photos / "dog" / "dog2.jpg").read_bytes(), TINY_PX)
    np.testing.assert_allclose(feats["dog/dog2.jpg"], session.run(px[None])[0], rtol=1e-6)


def test_unchanged_rerun_computes_nothing_and_leaves_file(photos, store, tiny_onnx):
    first = run(photos, store, tiny_onnx)
    before = (store / "features" / "photos@tiny.h5").stat().st_mtime_ns
    again = run(photos, store, tiny_onnx)
    assert (again.n_computed, again.n_reused, again.written) == (0, 8, False)
    assert (store / "features" / "photos@tiny.h5").stat().st_mtime_ns == before
    assert again.feature_set == first.feature_set


def test_added_removed_changed_and_moved_files(photos, store, tiny_onnx):
    run(photos, store, tiny_onnx)
    old, _ = features_by_path(store, "photos@tiny")
    write_image(photos / "dog" / "new.jpg", 77)
    (photos / "cat" / "cat0.jpg").unlink()
    write_image(photos / "cat" / "cat1.jpg", 555)  # same name, new bytes
    shutil.move(photos / "dog" / "dog3.jpg", photos / "cat" / "was_dog3.jpg")
    r = run(photos, store, tiny_onnx)
    assert r.n_computed == 2  # new.jpg and the rewritten cat1.jpg
    assert r.n_images == 8 and r.n_reused == 6
    assert r.n_removed == 3  # cat0 gone, old cat1 bytes gone, dog3 path gone
    feats, rows = features_by_path(store, "photos@tiny")
    assert "cat/cat0.jpg" not in feats
    np.testing.assert_array_equal(feats["cat/was_dog3.jpg"], old["dog/dog3.jpg"])
    assert rows.labels[rows.paths.index("cat/was_dog3.jpg")] == 0
    assert not np.array_equal(feats["cat/cat1.jpg"], old["cat/cat1.jpg"])


def test_duplicate_files_are_computed_once(photos, store, tiny_onnx):
    shutil.copy(photos / "cat" / "cat0.jpg", photos / "dog" / "copy.jpg")
    r = run(photos, store, tiny_onnx)
    assert r.n_images == 9 and r.n_computed == 8


def test_bad_files_are_skipped_and_listed(photos, store, tiny_onnx):
    (photos / "cat" / "text.jpg").write_text("not really a jpeg")
    (photos / "cat" / "zero.png").write_bytes(b"")
    good = (photos / "dog" / "dog0.jpg").read_bytes()
    (photos / "dog" / "cut.jpg").write_bytes(good[: len(good) // 3])
    r = run(photos, store, tiny_onnx)
    assert r.n_images == 8 and r.n_skipped == 3
    reasons = {s.path: s.reason for s in r.skipped}
    assert reasons["cat/text.jpg"] == "not an image Pillow can read"
    assert reasons["cat/zero.png"] == "empty file (0 bytes)"
    assert reasons["dog/cut.jpg"].startswith("corrupt or truncated image")


def test_no_readable_image_is_an_error_and_writes_nothing(tmp_path, store, tiny_onnx):
    (tmp_path / "bad" / "a").mkdir(parents=True)
    (tmp_path / "bad" / "a" / "x.jpg").write_bytes(b"nope")
    with pytest.raises(DatasetError, match="none of the 1 images"):
        run(tmp_path / "bad", store, tiny_onnx)
    assert not list((store / "features").glob("*.h5"))


def test_float16_and_mismatch_guard(photos, store, tiny_onnx):
    run(photos, store, tiny_onnx, dtype="float16")
    with open_feature_set(resolve_store(store), "photos@tiny") as r:
        assert r.read_features().dtype == np.float16
    with pytest.raises(StoreMismatchError, match="pass --force"):
        run(photos, store, tiny_onnx, dtype="float32")
    with pytest.raises(StoreMismatchError):
        run(photos, store, tiny_onnx, dtype="float16", resize="crop")
    r = run(photos, store, tiny_onnx, dtype="float32", force=True)
    assert r.n_computed == 8 and r.dtype == "float32"


def test_split_and_manifest_layouts_are_stored(tmp_path, store, tiny_onnx, photos):
    csv = tmp_path / "m.csv"
    csv.write_text("path,label,split\nphotos/cat/cat0.jpg,cat,train\nphotos/dog/dog0.jpg,dog,test\n")
    r = run(csv, store, tiny_onnx)
    assert r.layout == "manifest"
    _, rows = features_by_path(store, "m@tiny")
    assert rows.split == ["train", "test"] and list(rows.labels) == [0, 1]


def test_damaged_store_file_is_reported_not_overwritten(photos, store, tiny_onnx):
    run(photos, store, tiny_onnx)
    path = store / "features" / "photos@tiny.h5"
    path.write_bytes(b"\0" * 100)
    with pytest.raises(StoreError, match="damaged"):
        run(photos, store, tiny_onnx)
    assert path.read_bytes() == b"\0" * 100
    assert run(photos, store, tiny_onnx, force=True).n_computed == 8


def test_every_run_is_logged(photos, store, tiny_onnx):
    run(photos, store, tiny_onnx)
    run(photos, store, tiny_onnx, emissions=True, country="FRA")
    runs, bad = read_runs(resolve_store(store))
    assert bad == 0 and [r["command"] for r in runs] == ["extract", "extract"]
    assert runs[0]["counts"]["n_computed"] == 8 and runs[1]["counts"]["n_reused"] == 8
    assert runs[0]["energy_kwh"] is None
    assert runs[1]["emissions"]["country"] == "FRA"
    assert runs[1]["energy_kwh"] is None or runs[1]["energy_kwh"] >= 0


def test_bad_options(photos, store, tiny_onnx):
    with pytest.raises(DatasetError, match="--resize"):
        run(photos, store, tiny_onnx, resize="stretch")
    with pytest.raises(DatasetError, match="--dtype"):
        run(photos, store, tiny_onnx, dtype="int8")
    with pytest.raises(DatasetError, match="--batch-size"):
        run(photos, store, tiny_onnx, batch_size=0)


def test_cached_backbone_runs_without_tensorflow(photos, store_with_mnv2):
    """extract with a cached export, and the listing commands, never import TensorFlow."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from featstore.extraction import extract\n"
        "from featstore.catalog import list_backbones\n"
        "from featstore.store import list_feature_sets, verify_store\n"
        "from featstore.layout import resolve_store\n"
        f"r = extract({str(photos)!r}, 'mobilenet_v2', store={str(store_with_mnv2)!r}, weights='none',"
        " input_size=32, emissions=True)\n"
        "assert r.n_computed == 8, r\n"
        "list_backbones(); list_feature_sets(resolve_store(r.path.rsplit('/features/', 1)[0]))\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'tf2onnx') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
