"""`extract` end to end on real image files, a real ONNX backbone and real HDF5 files."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from conftest import TINY_PX, via_store, write_image

from featstore.errors import DatasetError, InvalidOptionError, StoreError, StoreMismatchError
from featstore.inference.onnxruntime_runtime import open_session
from featstore.store.layout import resolve_store
from featstore.store.runlog import read_runs
from featstore.store.shards import open_feature_set

extract = via_store("extract")


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
    from featstore.data.decode import decode_image

    session = open_session(tiny_onnx, device="cpu")
    px = decode_image((photos / "dog" / "dog2.jpg").read_bytes(), TINY_PX)
    np.testing.assert_allclose(feats["dog/dog2.jpg"], session.run(px[None])[0], rtol=1e-6)


def test_unchanged_rerun_computes_nothing_and_leaves_file(photos, store, tiny_onnx):
    first = run(photos, store, tiny_onnx)
    before = (store / "features" / "photos@tiny" / "CURRENT").stat().st_mtime_ns
    again = run(photos, store, tiny_onnx)
    assert (again.n_computed, again.n_reused, again.written) == (0, 8, False)
    assert (store / "features" / "photos@tiny" / "CURRENT").stat().st_mtime_ns == before
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
    assert not (store / "features" / "bad@tiny").exists() and not list((store / "features").glob("*.h5"))


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
    from featstore.store.maintenance import verify_store

    run(photos, store, tiny_onnx)
    (path,) = (store / "features" / "photos@tiny").glob("shard-*.h5")
    path.write_bytes(b"\0" * 100)
    # nothing changed: decided from the manifest, the damaged shard left as it is
    assert run(photos, store, tiny_onnx).written is False and path.read_bytes() == b"\0" * 100
    with pytest.raises(StoreError, match="damaged"):
        features_by_path(store, "photos@tiny")
    (check,) = [c for c in verify_store(resolve_store(store)) if c.kind == "feature set"]
    assert not check.ok and path.name in " ".join(check.problems)
    (photos / "cat" / "cat0.jpg").unlink()  # a change that needs the stored rows: refused
    with pytest.raises(StoreError, match="damaged"):
        run(photos, store, tiny_onnx)
    assert path.read_bytes() == b"\0" * 100
    assert run(photos, store, tiny_onnx, force=True).n_computed == 7


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
    with pytest.raises(InvalidOptionError, match="resize: must be one of"):
        run(photos, store, tiny_onnx, resize="stretch")
    with pytest.raises(InvalidOptionError, match="dtype: must be one of float32, float16, not 'int8'"):
        run(photos, store, tiny_onnx, dtype="int8")
    with pytest.raises(InvalidOptionError, match="batch_size: must be a whole number of at least 1"):
        run(photos, store, tiny_onnx, batch_size=0)


def test_cached_backbone_runs_without_tensorflow(photos, store_with_mnv2):
    """extract with a cached export, and the listing commands, never import TensorFlow."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from featstore import Store\n"
        "from featstore.backbones.catalog import list_backbones\n"
        "from featstore.store.maintenance import list_feature_sets, verify_store\n"
        "from featstore.store.layout import resolve_store\n"
        f"r = Store({str(store_with_mnv2)!r}).extract({str(photos)!r}, 'mobilenet_v2', weights='none',"
        " input_size=32)\n"
        "assert r.n_computed == 8, r\n"
        "list_backbones(); list_feature_sets(resolve_store(r.path.rsplit('/features/', 1)[0]))\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'tf2onnx') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------- augmented views


def test_views_for_every_image_without_split(photos, store, tiny_onnx):
    from featstore.data.augment import augment, view_seed
    from featstore.data.decode import decode_image
    from featstore.data.options import AugmentConfig
    from featstore.store.maintenance import describe_feature_set, verify_store

    r = run(photos, store, tiny_onnx, augment="zoom,flip,rotate", copies=2, augment_seed=4)
    assert (r.n_images, r.n_views, r.n_computed, r.n_reused) == (8, 16, 24, 0)
    config = AugmentConfig(("flip", "rotate", "zoom"), 2, 4)
    assert r.augment == config.to_dict()
    with open_feature_set(resolve_store(store), "photos@tiny") as f:
        rows, feats = f.rows(), f.read_features()
        assert f.attrs["augment"] == {"ops": ["flip", "rotate", "zoom"], "copies": 2, "seed": 4, "version": 1}
    assert rows.view.dtype == np.int16 and list(rows.view[:6]) == [0, 1, 2, 0, 1, 2]
    pairs = list(zip(rows.paths, rows.view.tolist(), strict=True))
    assert pairs == sorted(pairs)
    assert rows.paths[:3] == ["cat/cat0.jpg"] * 3 and len(set(rows.digests[:3])) == 1
    assert list(rows.labels[:3]) == [0, 0, 0]
    # a view's features are the backbone's output on that view's pixels
    session = open_session(tiny_onnx, device="cpu")
    px = decode_image((photos / "cat" / "cat0.jpg").read_bytes(), TINY_PX)
    view2 = augment(px, config, view_seed(rows.digests[0], 2, 4))
    np.testing.assert_allclose(feats[2], session.run(view2[None])[0], rtol=1e-6)
    assert not np.allclose(feats[1], feats[2])
    layout = resolve_store(store)
    assert all(c.ok for c in verify_store(layout))
    info = describe_feature_set(layout, "photos@tiny")
    assert info["n_rows"] == 24 and info["n_augmented"] == 16 and info["per_class"] == {"cat": 4, "dog": 4}


def test_views_only_for_training_rows_when_split(tmp_path, store, tiny_onnx):
    from conftest import make_class_folders

    data = tmp_path / "splits"
    make_class_folders(data / "train", n_per_class=2)
    make_class_folders(data / "val", n_per_class=1, seed=1)
    make_class_folders(data / "test", n_per_class=1, seed=2)
    r = run(data, store, tiny_onnx, augment="translate,contrast", copies=3)
    assert (r.n_images, r.n_views, r.n_computed) == (8, 12, 20)
    _, rows = features_by_path(store, "splits@tiny")
    with_views = {p for p, v in zip(rows.paths, rows.view, strict=True) if v > 0}
    assert with_views == {p for p, s in zip(rows.paths, rows.split, strict=True) if s == "train"}
    assert len(with_views) == 4 and max(rows.view) == 3
    # a split column of a manifest counts too
    csv = tmp_path / "m.csv"
    csv.write_text(
        "path,label,split\nsplits/train/cat/cat0.jpg,cat,train\nsplits/test/dog/dog0.jpg,dog,test\n"
    )
    r = run(csv, store, tiny_onnx, augment="flip", copies=2)
    _, rows = features_by_path(store, "m@tiny")
    assert r.n_views == 2 and [(s, int(v)) for s, v in zip(rows.split, rows.view, strict=True)] == [
        ("test", 0),
        ("train", 0),
        ("train", 1),
        ("train", 2),
    ]


def features_by_row(store, name):
    """{(path, view): features} of a feature set."""
    with open_feature_set(resolve_store(store), name) as r:
        rows = r.rows()
        keys = zip(rows.paths, rows.view.tolist(), strict=True)
        return dict(zip(keys, r.read_features(), strict=True)), r.attrs


def test_view_cache_reruns_more_copies_and_changed_augmentations(photos, store, tiny_onnx):
    aug = {"augment": "flip,rotate,zoom"}
    run(photos, store, tiny_onnx, copies=2, **aug)
    path = store / "features" / "photos@tiny" / "CURRENT"
    before = path.stat().st_mtime_ns
    first, _ = features_by_row(store, "photos@tiny")

    again = run(photos, store, tiny_onnx, copies=2, **aug)
    assert (again.n_computed, again.n_reused, again.n_views, again.written) == (0, 24, 16, False)
    assert path.stat().st_mtime_ns == before

    more = run(photos, store, tiny_onnx, copies=3, **aug)  # only view 3 of each image is new
    assert (more.n_computed, more.n_reused, more.n_views, more.n_removed) == (8, 24, 24, 0)
    feats, attrs = features_by_row(store, "photos@tiny")
    assert attrs["augment"]["copies"] == 3 and sorted({v for _, v in feats}) == [0, 1, 2, 3]
    for key, value in first.items():
        np.testing.assert_array_equal(feats[key], value)

    changed = run(photos, store, tiny_onnx, augment="flip,contrast", copies=3)
    assert (changed.n_computed, changed.n_reused, changed.n_removed) == (24, 8, 24)
    reseeded = run(photos, store, tiny_onnx, augment="flip,contrast", copies=3, augment_seed=1)
    assert (reseeded.n_computed, reseeded.n_reused) == (24, 8)
    feats, attrs = features_by_row(store, "photos@tiny")
    assert attrs["augment"] == {"ops": ["flip", "contrast"], "copies": 3, "seed": 1, "version": 1}
    for (p, v), value in first.items():
        if v == 0:  # the plain rows were kept all along
            np.testing.assert_array_equal(feats[(p, 0)], value)
        else:
            assert not np.array_equal(feats[(p, v)], value)

    dropped = run(photos, store, tiny_onnx)  # no --augment: the views go, the plain rows stay
    assert (dropped.n_computed, dropped.n_views, dropped.n_removed) == (0, 0, 24)
    feats, attrs = features_by_row(store, "photos@tiny")
    assert "augment" not in attrs and {v for _, v in feats} == {0}


def test_interrupted_run_resumes_its_views(photos, store, tiny_onnx, monkeypatch):
    import featstore.extraction.rows as extraction

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(extraction, "commit_rows", killed)
    with pytest.raises(KeyboardInterrupt):
        run(photos, store, tiny_onnx, augment="rotate", copies=2, batch_size=5)
    monkeypatch.undo()
    assert len(list((store / "features" / "photos@tiny.parts").glob("part-*.h5"))) == 5
    r = run(photos, store, tiny_onnx, augment="rotate", copies=2)
    assert (r.n_computed, r.n_resumed, r.n_views) == (0, 24, 16)
    assert not (store / "features" / "photos@tiny.parts").exists()


def test_bad_augment_options_write_nothing(photos, store, tiny_onnx):
    with pytest.raises(InvalidOptionError, match="augment: unknown augmentation 'blur'"):
        run(photos, store, tiny_onnx, augment="flip,blur", copies=2)
    with pytest.raises(InvalidOptionError, match="copies: must be at least 1 with transforms"):
        run(photos, store, tiny_onnx, augment="flip")
    with pytest.raises(InvalidOptionError, match="copies: 2 augmented views need transforms"):
        run(photos, store, tiny_onnx, copies=2)
    assert not (store / "features").exists() or not list((store / "features").iterdir())


def test_option_objects_and_flat_keywords_give_the_same_set(photos, tmp_path, tiny_onnx):
    from featstore.backbones.options import BackboneOptions
    from featstore.data.options import DecodeOptions
    from featstore.extraction.job import extract as extract_objects
    from featstore.extraction.options import ExtractOptions
    from featstore.inference.options import InferenceOptions
    from featstore.options import JobOptions
    from featstore.store.runlog import ExtractRecord, read_records

    objects = extract_objects(
        str(photos),
        BackboneOptions(str(tiny_onnx)),
        decode=DecodeOptions(resize="crop"),
        inference=InferenceOptions(batch_size=3),
        options=ExtractOptions(dtype="float16", name="pics"),
        job=JobOptions(store=str(tmp_path / "a"), emissions=False),
    )
    flat = run(photos, tmp_path / "b", tiny_onnx, resize="crop", batch_size=3, dtype="float16", name="pics")
    assert objects.feature_set == flat.feature_set == "pics@tiny" and objects.batch_size == 3
    a, _ = features_by_path(tmp_path / "a", "pics@tiny")
    b, _ = features_by_path(tmp_path / "b", "pics@tiny")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    [record], notes = read_records(resolve_store(tmp_path / "a"))
    assert isinstance(record, ExtractRecord) and record.feature_set == "pics@tiny" and notes == []
    assert record.counts["n_computed"] == 8 and record.batch_size == 3 and record.seconds >= 0


def test_the_store_turns_keywords_into_option_objects(photos, tmp_path, tiny_onnx):
    from featstore import Store

    store = Store(tmp_path / "k", emissions=False)
    with pytest.raises(InvalidOptionError, match="batch: unknown option; valid ones: augment, augment_seed"):
        store.extract(photos, str(tiny_onnx), batch=8)
    with pytest.raises(InvalidOptionError, match="dtype: must be one of float32, float16"):
        store.extract(photos, str(tiny_onnx), dtype="int4")
    with pytest.raises(InvalidOptionError, match="store: is the Store's own root"):
        store.extract(photos, str(tiny_onnx), store="elsewhere")
    assert not (tmp_path / "k" / "features").exists()
