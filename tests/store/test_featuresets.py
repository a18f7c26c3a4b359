"""The HDF5 store: round trips, parts, locks, listing, verification of damaged files."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest
from conftest import as_single_file, via_store

from featstore.errors import StoreLockedError, UnknownFeatureSetError
from featstore.store.featuresets import (
    FeatureRows,
    FeatureSetReader,
    feature_set_lock,
    is_locked,
    write_feature_set,
)
from featstore.store.layout import resolve_store
from featstore.store.maintenance import (
    describe_feature_set,
    list_feature_sets,
    remove_feature_set,
    verify_store,
)
from featstore.store.parts import FeatureSource, PartWriter, read_parts
from featstore.store.shards import open_feature_set

extract = via_store("extract")


def _write(path, n=5, d=3, dtype="float32", paths=None):
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(n, d)).astype(dtype)
    digests = [f"{i:064x}" for i in range(n)]
    rows = FeatureRows(
        paths=paths or [f"c/{i}.jpg" for i in range(n)],
        labels=np.arange(n) % 2,
        digests=digests,
        split=["train"] * (n - 1) + ["test"],
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.parent.parent / f"{path.stem}-src.h5"
    with h5py.File(part, "w") as f:
        f["features"] = feats
    source = FeatureSource()
    source.add_path(part, digests)
    write_feature_set(path, rows, source, d, dtype, {"class_names": ["a", "b"], "backbone": "x"})
    source.close()
    return feats, rows


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_round_trip(tmp_path, dtype):
    path = tmp_path / "features" / "ds@x.h5"
    feats, rows = _write(path, dtype=dtype)
    with FeatureSetReader(path) as r:
        assert len(r) == 5 and r.n_features == 3
        assert r.class_names == ["a", "b"]
        np.testing.assert_array_equal(r.read_features(), feats)
        np.testing.assert_array_equal(r.read_features(np.array([4, 0, 4])), feats[[4, 0, 4]])
        got = r.rows()
        assert got.paths == rows.paths and got.split == rows.split and got.digests == rows.digests
        assert r.attrs["dtype"] == dtype and r.attrs["n_rows"] == 5
    assert not list(path.parent.glob("*.tmp"))


def test_non_utf8_and_unicode_paths_round_trip(tmp_path):
    weird = [os.fsdecode(b"c/caf\xe9.jpg"), "c/été photo.jpg", "c/日本.png"]
    path = tmp_path / "ds@x.h5"
    _write(path, n=3, paths=weird)
    with FeatureSetReader(path) as r:
        assert r.rows().paths == weird


def test_empty_feature_set_round_trip(tmp_path):
    path = tmp_path / "e@x.h5"
    write_feature_set(path, FeatureRows([], np.zeros(0, np.int32), [], []), FeatureSource(), 4, "float32", {})
    with FeatureSetReader(path) as r:
        assert len(r) == 0 and r.read_features().shape == (0, 4)


def test_parts_are_atomic_and_filtered_by_tag(tmp_path):
    folder = tmp_path / "ds@x.parts"
    w = PartWriter(folder, "tag-a", "float32")
    w.write(["a" * 64, "b" * 64], np.ones((2, 3), np.float32))
    (folder / ".part.123.tmp").write_bytes(b"half written")
    other = PartWriter(folder, "tag-b", "float32")
    other.write(["c" * 64], np.zeros((1, 3), np.float32))
    source = FeatureSource()
    assert read_parts(folder, "tag-a", "float32", source) == 2
    assert sorted(source.digests()) == ["a" * 64, "b" * 64]
    np.testing.assert_array_equal(source.gather(["b" * 64], 3, "float32"), np.ones((1, 3)))
    source.close()
    assert not list(folder.glob("*.tmp")) and len(list(folder.glob("part-*.h5"))) == 1


def test_source_keeps_few_files_open(tmp_path):
    source = FeatureSource(max_open=2)
    for i in range(5):
        w = PartWriter(tmp_path / "p", "t", "float32")
        w.write([f"{i:064x}"], np.full((1, 2), i, np.float32))
    read_parts(tmp_path / "p", "t", "float32", source)
    digests = [f"{i:064x}" for i in (4, 0, 3, 1, 2)]
    np.testing.assert_array_equal(source.gather(digests, 2, "float32")[:, 0], [4, 0, 3, 1, 2])
    assert len(source._open) == 2
    source.close()


def test_lock_refuses_a_second_writer(tmp_path):
    path = tmp_path / "ds@x.h5"
    with feature_set_lock(path):
        assert is_locked(path)
        with pytest.raises(StoreLockedError, match=f"pid {os.getpid()}"):
            with feature_set_lock(path):
                pass
        with pytest.raises(StoreLockedError):
            with feature_set_lock(path, wait=True, timeout_s=0.3):
                pass
    assert not is_locked(path)


def test_unknown_feature_set_lists_the_known_ones(tmp_path):
    layout = resolve_store(tmp_path / "store")
    with pytest.raises(UnknownFeatureSetError, match="has none yet"):
        open_feature_set(layout, "x@y")
    _write(layout.feature_set("ds@x"))
    with pytest.raises(UnknownFeatureSetError, match="there are: ds@x"):
        open_feature_set(layout, "x@y")


def _damage(path, offset_frac=0.5, n=64):
    data = bytearray(path.read_bytes())
    at = int(len(data) * offset_frac)
    data[at : at + n] = bytes((b ^ 0xFF) for b in data[at : at + n])
    path.write_bytes(bytes(data))


def test_verify_detects_overwritten_bytes_and_ls_survives(tmp_path, photos, tiny_onnx):
    store = tmp_path / "store"
    extract(str(photos), str(tiny_onnx), store=str(store), emissions=False)
    layout = resolve_store(store)
    assert all(c.ok for c in verify_store(layout))
    (path,) = (layout.features / "photos@tiny").glob("shard-*.h5")
    with h5py.File(path, "r") as f:
        offset = f["features"].id.get_chunk_info(0).byte_offset
    data = bytearray(path.read_bytes())
    data[offset + 3] ^= 0xFF  # flip one byte of the features
    path.write_bytes(bytes(data))
    checks = verify_store(layout)
    bad = [c for c in checks if not c.ok]
    assert [c.path for c in bad] == [str(path.parent)]
    assert "whole-file checksum does not match" in " ".join(bad[0].problems)
    # a wholesale overwrite of the header: unreadable, named, and `ls` still lists it
    _damage(path, 0.0, 200)
    assert not verify_store(layout)[0].ok
    info = list_feature_sets(layout)
    assert info[0].name == "photos@tiny" and info[0].status.startswith("damaged")


def test_verify_flags_a_changed_backbone_file(tmp_path, photos, tiny_onnx):
    store = tmp_path / "store"
    extract(str(photos), str(tiny_onnx), store=str(store), emissions=False)
    layout = resolve_store(store)
    onnx_file = next(layout.backbones.glob("*.onnx"))
    onnx_file.write_bytes(onnx_file.read_bytes() + b"x")
    bad = [c for c in verify_store(layout) if not c.ok]
    assert bad[0].kind == "backbone" and "sha256" in bad[0].problems[0]


def test_verify_notes_truncated_run_log(tmp_path):
    layout = resolve_store(tmp_path / "store")
    layout.root.mkdir(parents=True)
    layout.runs.write_text('{"command": "extract"}\n{"command": "ext')
    (check,) = verify_store(layout)
    assert check.ok and "1 unreadable line" in check.notes[0]


def test_describe_and_remove(tmp_path):
    layout = resolve_store(tmp_path / "store")
    _write(layout.feature_set("ds@x"))
    info = describe_feature_set(layout, "ds@x")
    assert info["per_class"] == {"a": 3, "b": 2}
    assert info["per_split"] == {"train": 4, "test": 1}
    removed = remove_feature_set(layout, "ds@x")
    assert removed == [str(layout.feature_set("ds@x"))]
    assert list_feature_sets(layout) == []
    with pytest.raises(UnknownFeatureSetError):
        remove_feature_set(layout, "ds@x")


def test_remove_refuses_while_written(tmp_path):
    layout = resolve_store(tmp_path / "store")
    _write(layout.feature_set("ds@x"))
    with feature_set_lock(layout.feature_set("ds@x")):
        with pytest.raises(StoreLockedError):
            remove_feature_set(layout, "ds@x")
    assert layout.feature_set("ds@x").exists()


@pytest.mark.parametrize("limit_bytes", [3000, 15000], ids=["during-part", "during-final-file"])
def test_disk_full_keeps_the_committed_version(tmp_path, photos, tiny_onnx, limit_bytes):
    """A file-size limit makes the write fail: clear error, previous file intact."""
    import subprocess
    import sys

    store = tmp_path / "store"
    extract(str(photos), str(tiny_onnx), store=str(store), emissions=False)
    folder = resolve_store(store).features / "photos@tiny"
    snapshot = lambda: {p.name: p.read_bytes() for p in folder.iterdir()}  # noqa: E731
    before = snapshot()
    for i in range(40):
        from conftest import write_image

        write_image(photos / "cat" / f"big{i}.jpg", 1000 + i, size=(64, 64))
    code = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit_bytes}, {limit_bytes}))\n"
        "from featstore import Store\n"
        "from featstore.errors import FeatstoreError\n"
        f"try: Store({str(store)!r}, emissions=False).extract({str(photos)!r}, {str(tiny_onnx)!r}, batch_size=4)\n"
        "except FeatstoreError as e: print('ERR', e); sys.exit(1)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stderr
    expected = "stored data is intact" if limit_bytes < 5000 else "the committed version is intact"
    assert "no space left" in out.stdout and expected in out.stdout, out.stdout
    assert snapshot() == before
    assert all(c.ok for c in verify_store(resolve_store(store)))


def test_views_round_trip_and_verify_checks_path_view_pairs(tmp_path):
    path = tmp_path / "features" / "ds@x.h5"
    _write(path, n=4, paths=["c/0.jpg", "c/0.jpg", "c/0.jpg", "c/1.jpg"])
    with h5py.File(path, "r") as f:  # no views given: a view column of zeros
        assert f["view"].dtype == np.int16 and not f["view"][...].any()
    bad = verify_store(resolve_store(tmp_path))[0]
    assert not bad.ok and "a (path, view) pair appears twice" in bad.problems

    rows = FeatureRows(["c/0.jpg"] * 3, np.zeros(3, np.int32), ["a" * 64] * 3, ["train"] * 3, view=[0, 1, 2])
    part = tmp_path / "src.h5"
    with h5py.File(part, "w") as f:
        f["features"] = np.arange(6, dtype=np.float32).reshape(3, 2)
    source = FeatureSource()
    source.add_path(part, ["k0", "k1", "k2"])
    augment = {"ops": ["flip"], "copies": 2, "seed": 0, "version": 1}
    attrs = {"augment": augment, "class_names": ["a"]}
    write_feature_set(path, rows, source, 2, "float32", attrs, keys=["k0", "k1", "k2"])
    source.close()
    with FeatureSetReader(path) as r:
        assert r.rows().view.tolist() == [0, 1, 2] and r.attrs["augment"] == augment
        np.testing.assert_array_equal(r.read_features()[:, 0], [0, 2, 4])
    assert verify_store(resolve_store(tmp_path))[0].ok
    # a changed view index is caught by the row checksum
    with h5py.File(path, "a") as f:
        f["view"][2] = 5
    problems = verify_store(resolve_store(tmp_path))[0].problems
    assert "row checksum does not match: paths, labels or digests altered" in problems
    assert "view indices outside 0..2 (the recorded augmentation copies)" in problems


def test_file_without_view_column_reads_as_plain_rows(tmp_path, photos, tiny_onnx):
    """Feature set files written before the view column existed still read, verify and are reused."""
    store = tmp_path / "store"
    extract(str(photos), str(tiny_onnx), store=str(store), emissions=False)
    layout = resolve_store(store)
    path = as_single_file(layout, "photos@tiny")
    with h5py.File(path, "a") as f:
        del f["view"]
        f.attrs["format_version"] = 1
    (path.parent / (path.name + ".sha256")).unlink()
    with FeatureSetReader(path) as r:
        assert r.rows().view.tolist() == [0] * 8
    assert all(c.ok for c in verify_store(layout))
    r = extract(str(photos), str(tiny_onnx), store=str(store), emissions=False, augment="flip", copies=1)
    assert (r.n_computed, r.n_reused, r.n_views) == (8, 8, 8)
