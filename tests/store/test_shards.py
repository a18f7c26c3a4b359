"""Sharded feature sets: appends touch nothing committed, drops, compaction, the single-file
layout read and converted, orphans cleaned, and the stat cache (no image read when nothing moved)."""

from __future__ import annotations

import json
import os
import shutil
import time

import numpy as np
import pytest
from conftest import as_single_file, via_store, write_image

import featstore.data.decode as decode
from featstore.store import commits, shards
from featstore.store.layout import resolve_store
from featstore.store.maintenance import compact_feature_sets, list_feature_sets, verify_store
from featstore.store.shards import open_feature_set, read_manifest

extract = via_store("extract")


def _run(photos, store, onnx, **kw):
    return extract(str(photos), str(onnx), store=str(store), emissions=False, **kw)


def _by_path(store, name="photos@tiny"):
    with open_feature_set(resolve_store(store), name) as r:
        rows = r.rows()
        return dict(zip(rows.paths, r.read_features(), strict=True)), rows


def _backdate(folder, seconds=60):
    """Make every image look written `seconds` ago (so the stat cache may trust it)."""
    t = time.time_ns() - seconds * 10**9
    for p in folder.rglob("*.jpg"):
        os.utime(p, ns=(t, t))


def _folder(store, name="photos@tiny"):
    return resolve_store(store).features / name


def test_append_writes_a_new_shard_and_touches_nothing_committed(photos, store, tiny_onnx):
    _run(photos, store, tiny_onnx)
    folder = _folder(store)
    (first,) = folder.glob("shard-*.h5")
    before = (first.read_bytes(), first.stat().st_mtime_ns)
    old, _ = _by_path(store)
    write_image(photos / "dog" / "new1.jpg", 91)
    write_image(photos / "cat" / "new2.jpg", 92)
    r = _run(photos, store, tiny_onnx)
    assert (r.n_computed, r.n_reused, r.written) == (2, 8, True)
    assert (first.read_bytes(), first.stat().st_mtime_ns) == before
    m = read_manifest(folder)
    assert m.version == 2 and [s.n_rows for s in m.shards] == [8, 2]
    feats, rows = _by_path(store)
    assert len(rows) == 10 and {"dog/new1.jpg", "cat/new2.jpg"} <= set(feats)
    for p, v in old.items():
        np.testing.assert_array_equal(feats[p], v)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["CURRENT", m.file, *(s.file for s in m.shards)]
    )  # the older manifest is gone: nothing names it


def test_gone_files_are_dropped_then_compacted_away(photos, store, tiny_onnx):
    _run(photos, store, tiny_onnx)
    write_image(photos / "dog" / "new1.jpg", 91)
    _run(photos, store, tiny_onnx)
    old, _ = _by_path(store)
    (photos / "cat" / "cat0.jpg").unlink()
    (photos / "dog" / "new1.jpg").unlink()
    r = _run(photos, store, tiny_onnx)
    assert (r.n_computed, r.n_removed) == (0, 2)
    m = read_manifest(_folder(store))
    # the shard of new1.jpg alone has no row left: it leaves the manifest (and the folder)
    assert [len(s.dropped) for s in m.shards] == [1] and m.n_rows == 7
    feats, rows = _by_path(store)
    assert "cat/cat0.jpg" not in feats and len(rows) == 7
    write_image(photos / "dog" / "new2.jpg", 92)
    _run(photos, store, tiny_onnx)
    old, _ = _by_path(store)
    with open_feature_set(resolve_store(store), "photos@tiny") as reader:  # reads across shards
        assert len(reader.manifest.shards) == 2
        pick = np.array([7, 0, 3, 3, 6])
        np.testing.assert_array_equal(reader.read_features(pick), reader.read_features()[pick])
        np.testing.assert_array_equal(np.concatenate(list(reader.iter_features(3))), reader.read_features())

    (done,) = compact_feature_sets(store)
    assert (done.shards_before, done.shards_after, done.rows_dropped) == (2, 1, 1)
    m = read_manifest(_folder(store))
    assert [s.n_rows for s in m.shards] == [8] and not m.shards[0].dropped
    feats, _ = _by_path(store)
    for p, v in feats.items():
        np.testing.assert_array_equal(v, old[p])
    assert compact_feature_sets(store)[0].version is None  # nothing left to do
    assert all(c.ok for c in verify_store(resolve_store(store)))


def test_moved_file_is_reused_not_recomputed(photos, store, tiny_onnx):
    _run(photos, store, tiny_onnx)
    old, _ = _by_path(store)
    shutil.move(photos / "cat" / "cat1.jpg", photos / "dog" / "was-cat1.jpg")
    r = _run(photos, store, tiny_onnx)
    assert (r.n_computed, r.n_removed, r.written) == (0, 1, True)
    feats, rows = _by_path(store)
    np.testing.assert_array_equal(feats["dog/was-cat1.jpg"], old["cat/cat1.jpg"])
    assert rows.labels[rows.paths.index("dog/was-cat1.jpg")] == 1


def test_single_file_sets_still_read_and_convert_on_first_write(photos, store, tiny_onnx):
    _run(photos, store, tiny_onnx)
    layout = resolve_store(store)
    path = as_single_file(layout, "photos@tiny")
    old, _ = _by_path(store)  # reads the single file
    assert len(old) == 8 and list_feature_sets(layout)[0].n_shards is None
    assert _run(photos, store, tiny_onnx).written is False  # unchanged: left as it is
    assert path.is_file()
    inode = path.stat().st_ino
    write_image(photos / "dog" / "new1.jpg", 91)
    r = _run(photos, store, tiny_onnx)
    assert (r.n_computed, r.n_reused) == (1, 8)
    assert not path.exists() and not path.with_name(path.name + ".sha256").exists()
    m = read_manifest(_folder(store))
    assert m.shards[0].n_rows == 8 and (_folder(store) / m.shards[0].file).stat().st_ino == inode  # linked
    feats, _ = _by_path(store)
    for p, v in old.items():
        np.testing.assert_array_equal(feats[p], v)
    assert all(c.ok for c in verify_store(layout))


def test_compact_converts_a_single_file_set(photos, store, tiny_onnx):
    _run(photos, store, tiny_onnx)
    layout = resolve_store(store)
    path = as_single_file(layout, "photos@tiny")
    old, _ = _by_path(store)
    (done,) = compact_feature_sets(store, ["photos@tiny"])
    assert done.version == 1 and not path.exists() and shards.is_sharded(path)
    feats, _ = _by_path(store)
    assert feats.keys() == old.keys()
    assert all(c.ok for c in verify_store(layout))


def test_orphans_of_a_killed_writer_are_noted_then_cleaned(photos, store, tiny_onnx):
    _run(photos, store, tiny_onnx)
    folder = _folder(store)
    (folder / "shard-00000009-0000.h5").write_bytes(b"half a shard")
    (folder / ".shard-00000009-0001.h5.x.tmp").write_bytes(b"")
    (folder / "manifest-00000009.json").write_text("{")
    check = verify_store(resolve_store(store))[0]
    assert check.ok and "3 file(s) of an interrupted write" in check.notes[0]
    write_image(photos / "dog" / "new1.jpg", 91)
    _run(photos, store, tiny_onnx)
    m = read_manifest(folder)
    assert m.version == 2  # the orphans went first, so their numbers are free again
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["CURRENT", m.file, *(s.file for s in m.shards)]
    )


def test_small_shards_are_merged_past_the_limit(photos, store, tiny_onnx, monkeypatch):
    monkeypatch.setattr(commits, "MAX_SMALL_SHARDS", 2)
    _run(photos, store, tiny_onnx)
    for i in range(3):
        write_image(photos / "dog" / f"new{i}.jpg", 90 + i)
        _run(photos, store, tiny_onnx)
    m = read_manifest(_folder(store))
    assert len(m.shards) <= 3 and m.n_rows == 11
    assert all(c.ok for c in verify_store(resolve_store(store)))


def test_stat_cache_unchanged_run_reads_no_image_and_opens_no_session(photos, store, tiny_onnx, monkeypatch):
    _backdate(photos)
    _run(photos, store, tiny_onnx)
    import featstore.extraction.pipeline as pipeline

    reads = []
    real, real_hash = decode._load_one, pipeline.sha256_file
    monkeypatch.setattr(
        decode, "_load_one", lambda item, *a, **k: reads.append(item.rel) or real(item, *a, **k)
    )
    monkeypatch.setattr(  # the few files the cache does not trust are hashed before the loop
        pipeline, "sha256_file", lambda p, **k: reads.append(os.path.relpath(p, photos)) or real_hash(p, **k)
    )

    def no_session(*a, **k):
        raise AssertionError("a session was opened")

    monkeypatch.setattr("featstore.extraction.pipeline.Extraction._open_session", no_session)
    r = _run(photos, store, tiny_onnx)
    assert (r.n_computed, r.n_reused, r.written, reads) == (0, 8, False, [])

    # touched (same bytes): hashed once more, its row kept; racy: hashed again next run too
    os.utime(photos / "cat" / "cat0.jpg")
    assert _run(photos, store, tiny_onnx).written is False and reads == ["cat/cat0.jpg"]
    assert _run(photos, store, tiny_onnx).written is False and reads == ["cat/cat0.jpg"] * 2
    _backdate(photos)  # a new mtime: hashed once, then trusted
    _run(photos, store, tiny_onnx)
    reads.clear()
    _run(photos, store, tiny_onnx)
    assert reads == []
    # renamed: hashed once, row reused, nothing computed
    os.rename(photos / "dog" / "dog0.jpg", photos / "dog" / "renamed.jpg")
    r = _run(photos, store, tiny_onnx)
    assert reads == ["dog/renamed.jpg"] and (r.n_computed, r.n_removed) == (0, 1)
    # --rehash reads every file
    reads.clear()
    assert _run(photos, store, tiny_onnx, rehash=True).written is False and len(reads) == 8


def test_stat_cache_sees_same_size_same_mtime_rewrites_by_inode(photos, store, tiny_onnx):
    _backdate(photos)
    _run(photos, store, tiny_onnx)
    target = photos / "cat" / "cat0.jpg"
    st = target.stat()
    write_image(photos / "other.jpg", 555)  # different bytes, put in place under the same name
    os.replace(photos / "other.jpg", target)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    r = _run(photos, store, tiny_onnx)
    assert r.n_computed == 1  # a new inode and ctime: not trusted, hashed, new content computed


def test_damaged_stat_cache_is_set_aside(photos, store, tiny_onnx):
    _backdate(photos)
    _run(photos, store, tiny_onnx)
    (cache,) = (resolve_store(store).root / "statcache").glob("*.sqlite")
    cache.write_bytes(b"not a database at all" * 100)
    r = _run(photos, store, tiny_onnx)
    assert (r.n_computed, r.written) == (0, False)
    assert cache.with_suffix(".damaged").exists() and cache.exists()


def test_store_compact_and_ls_from_the_cli(photos, store, tiny_onnx):
    from typer.testing import CliRunner

    from featstore_cli.app import app

    _run(photos, store, tiny_onnx)
    (photos / "cat" / "cat0.jpg").unlink()
    _run(photos, store, tiny_onnx)
    runner = CliRunner()
    ls = json.loads(runner.invoke(app, ["store", "ls", "--store", str(store), "--json"]).stdout)
    assert ls[0]["n_shards"] == 1 and ls[0]["n_rows"] == 7
    out = runner.invoke(app, ["store", "compact", "--store", str(store)])
    assert out.exit_code == 0 and "photos@tiny: 1 -> 1 shards, 1 rows dropped" in out.stdout
    bad = runner.invoke(app, ["store", "compact", "nope@x", "--store", str(store)])
    assert bad.exit_code == 1 and "no feature set 'nope@x'" in bad.stderr


@pytest.mark.parametrize("damage", ["manifest", "missing-shard"])
def test_damaged_manifest_or_missing_shard_is_one_clear_error(photos, store, tiny_onnx, damage):
    from featstore.errors import StoreError

    _run(photos, store, tiny_onnx)
    folder = _folder(store)
    m = read_manifest(folder)
    if damage == "manifest":
        (folder / m.file).write_text("{not json")
    else:
        (folder / m.shards[0].file).unlink()
    with pytest.raises(StoreError, match="damaged" if damage == "manifest" else "lacks its shard"):
        _by_path(store)
    check = verify_store(resolve_store(store))[0]
    assert not check.ok
    assert _run(photos, store, tiny_onnx, force=True).n_computed == 8


def test_adding_files_to_a_trusted_folder_reads_no_stored_row(photos, store, tiny_onnx, monkeypatch):
    import featstore.extraction.rows as rows_mod

    _backdate(photos)
    _run(photos, store, tiny_onnx)
    old, _ = _by_path(store)

    def no_full_diff(*a, **k):
        raise AssertionError("the stored rows were read and diffed")

    monkeypatch.setattr(rows_mod, "commit_rows", no_full_diff)
    monkeypatch.setattr(shards.ShardedReader, "rows", no_full_diff)
    write_image(photos / "dog" / "new1.jpg", 91)
    shutil.copy(photos / "cat" / "cat2.jpg", photos / "dog" / "copy-of-cat2.jpg")  # stored bytes, new path
    (photos / "cat" / "bad.jpg").write_bytes(b"not an image")
    r = _run(photos, store, tiny_onnx)
    assert (r.n_images, r.n_computed, r.n_reused, r.n_skipped, r.written) == (10, 2, 8, 1, True)
    monkeypatch.undo()
    feats, rows = _by_path(store)
    assert len(rows) == 10
    np.testing.assert_array_equal(feats["dog/copy-of-cat2.jpg"], old["cat/cat2.jpg"])
    for p, v in old.items():
        np.testing.assert_array_equal(feats[p], v)
    assert all(c.ok for c in verify_store(resolve_store(store)))
    # only unreadable new files: nothing to add, nothing written
    _backdate(photos)
    _run(photos, store, tiny_onnx)
    (photos / "dog" / "bad2.jpg").write_bytes(b"still not an image")
    r = _run(photos, store, tiny_onnx)
    assert (r.n_computed, r.n_skipped, r.written) == (0, 2, False)


def test_a_recorded_scan_decides_unchanged_runs_and_appends_from_the_stats_alone(
    photos, store, tiny_onnx, monkeypatch
):
    """After a run, its scan (one hash of every file's stats, label and split) is recorded with
    the set's rows_key and the files it could not read: the next unchanged run reads no file
    entry, digest, image or shard, and still reports the unreadable file; an append trusts it
    instead of checksumming every stored row."""
    import featstore.extraction.pipeline as pipeline
    from featstore.store.statcache import StatCache

    (photos / "cat" / "bad.jpg").write_bytes(b"not an image")
    _backdate(photos)
    first = _run(photos, store, tiny_onnx)
    assert (first.n_images, first.n_skipped) == (8, 1)

    def refuse(*a, **k):
        raise AssertionError("read")

    for target, name in [(StatCache, "_entries"), (decode, "_load_one"), (pipeline, "sha256_file")]:
        monkeypatch.setattr(target, name, refuse)
    monkeypatch.setattr(pipeline.Extraction, "_open_session", refuse)
    monkeypatch.setattr(shards, "open_set", refuse)
    r = _run(photos, store, tiny_onnx)
    assert (r.n_images, r.n_computed, r.n_reused, r.written) == (8, 0, 8, False)
    assert [(s.path, s.reason) for s in r.skipped] == [(s.path, s.reason) for s in first.skipped]
    monkeypatch.undo()

    checksummed, real_key = [], shards.rows_key_of
    monkeypatch.setattr(
        shards, "rows_key_of", lambda *cols: checksummed.append(len(cols[0])) or real_key(*cols)
    )
    write_image(photos / "dog" / "new1.jpg", 91)
    r = _run(photos, store, tiny_onnx)
    assert (r.n_images, r.n_computed, r.n_reused, r.n_skipped, r.written) == (9, 1, 8, 1, True)
    assert checksummed == [1]  # the new row's alone, not the stored rows'
    monkeypatch.undo()
    assert all(c.ok for c in verify_store(resolve_store(store)))
    assert _run(photos, store, tiny_onnx, rehash=True).written is False


def test_a_recorded_scan_holds_only_for_files_older_than_its_stats(photos, store, tiny_onnx):
    """git's racy rule for the whole scan: files written within RACY_NS of the stats of the run
    that recorded it do not decide anything; labels and splits are part of the key."""
    from featstore.data.scan import scan_dataset
    from featstore.store.statcache import StatCache, cache_path

    layout = resolve_store(store)
    items = scan_dataset(photos).items
    path = cache_path(layout, photos)

    def record():
        cache = StatCache(path)
        cache.stat_files(items)
        key = cache.scan_key(items, "set")
        cache.remember({}, scan=("set", key, "k" * 64, [["cat/bad.jpg", "unreadable"]]))
        return key

    def recorded(rehash=False):
        cache = StatCache(path, rehash=rehash)
        cache.stat_files(items)
        return cache.recorded("set", cache.scan_key(items, "set"), items)

    record()  # the files were just written: racy
    assert recorded() is None
    _backdate(photos)
    key = record()
    assert recorded() == ("k" * 64, [["cat/bad.jpg", "unreadable"]])
    assert recorded(rehash=True) is None
    cache = StatCache(path)
    cache.stat_files(items)
    relabelled = [items[0]._replace(label=items[0].label + 1), *items[1:]]
    assert cache.scan_key(relabelled, "set") != key != cache.scan_key(items, "other set")
    assert cache.recorded("other set", key, items) is None
