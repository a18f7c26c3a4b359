"""The fine-tune run folder contract read by `extract` and `score`."""

import json

import pytest

from featstore.errors import StoreError
from featstore.files import sha256_file
from featstore.store import run_files as runstore
from featstore.store.layout import resolve_store


def _run(tmp_path, status="done"):
    layout = resolve_store(tmp_path / "store")
    folder = runstore.run_dir(layout, "finetune-x-1")
    folder.mkdir(parents=True)
    (folder / "classifier.onnx").write_bytes(b"model")
    meta = {"run_id": "finetune-x-1", "status": status, "classes": ["a", "b"]}
    meta["files_sha256"] = {"classifier.onnx": sha256_file(folder / "classifier.onnx", cached=False)}
    (folder / "meta.json").write_text(json.dumps(meta))
    return layout, folder


def test_parse_ref():
    assert runstore.parse_ref("finetune:abc") == "abc"
    assert runstore.parse_ref("mobilenet_v2") is None
    with pytest.raises(runstore.UnknownRunError):
        runstore.parse_ref("finetune:")


def test_run_file_checks_status_and_sha(tmp_path):
    layout, folder = _run(tmp_path)
    path, meta = runstore.run_file(layout, "finetune-x-1", "classifier.onnx")
    assert path == folder / "classifier.onnx" and meta["classes"] == ["a", "b"]
    (folder / "classifier.onnx").write_bytes(b"other bytes")
    with pytest.raises(StoreError, match="changed"):
        runstore.run_file(layout, "finetune-x-1", "classifier.onnx")


def test_unfinished_and_unknown_runs(tmp_path):
    layout, _ = _run(tmp_path, status="interrupted")
    with pytest.raises(StoreError, match="--resume finetune-x-1"):
        runstore.run_file(layout, "finetune-x-1", "classifier.onnx")
    with pytest.raises(runstore.UnknownRunError, match="some runs: finetune-x-1"):
        runstore.read_run_meta(layout, "nope")
    with pytest.raises(runstore.UnknownRunError):
        runstore.run_dir(layout, "../escape")


def test_write_run_meta_is_what_read_run_meta_reads(tmp_path):
    layout, folder = _run(tmp_path)
    meta = runstore.read_run_meta(layout, "finetune-x-1")
    runstore.write_run_meta(folder, {**meta, "status": "running", "path": tmp_path})
    assert runstore.read_run_meta(layout, "finetune-x-1") == {
        **meta,
        "status": "running",
        "path": str(tmp_path),
    }
    assert sorted(p.name for p in folder.iterdir()) == ["classifier.onnx", "meta.json"]  # no temporary left
