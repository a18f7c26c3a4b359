"""A store is data, never code: heads load without unpickling; a planted pickle runs nothing."""

from __future__ import annotations

import hashlib
import json
import pickle

import pytest
from conftest import blobs, via_store, write_synthetic_set
from typer.testing import CliRunner

from featstore.errors import StoreError
from featstore.store.head_files import PICKLE_FILE, load_head, read_meta, trust_head
from featstore.store.layout import resolve_store
from featstore_cli.app import app

fit_head = via_store("fit_head")


class _Plant:
    """Unpickling this creates the file `marker`: code run by a pickle."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def head_store(tmp_path):
    X, y = blobs()
    store = tmp_path / "store"
    write_synthetic_set(store, "bugs@tiny", X, y, ["a", "b", "c"])
    (r,) = fit_head("logistic", ["bugs@tiny"], store=str(store), name="h", C=[1.0], emissions=False)
    return store, r.head_id


def _as_earlier_version(folder, payload: bytes) -> None:
    """Make a head folder look saved by an earlier version: a pickle named in meta.json."""
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "model.skops").unlink()
    (folder / PICKLE_FILE).write_bytes(payload)
    files = {k: v for k, v in meta["files_sha256"].items() if k != "model.skops"}
    files[PICKLE_FILE] = hashlib.sha256(payload).hexdigest()
    (folder / "meta.json").write_text(json.dumps({**meta, "files_sha256": files}))


def test_a_planted_pickle_is_refused_and_runs_nothing(head_store, tmp_path):
    store, head_id = head_store
    layout = resolve_store(store)
    marker = tmp_path / "ran"
    _as_earlier_version(layout.heads / head_id, pickle.dumps(_Plant(str(marker))))
    with pytest.raises(StoreError, match=f"featstore heads trust {head_id}"):
        load_head(layout, head_id)
    out = CliRunner().invoke(
        app, ["evaluate", "--head", head_id, "--features", "bugs@tiny", "--store", str(store)]
    )
    assert out.exit_code == 1 and "saved by an earlier featstore as a pickle" in out.stderr
    assert not marker.exists()


def test_a_foreign_type_in_a_model_file_is_refused(head_store, tmp_path):
    import skops.io as sio

    store, head_id = head_store
    layout = resolve_store(store)
    folder = layout.heads / head_id
    sio.dump({"x": _Plant(str(tmp_path / "ran"))}, folder / "model.skops")
    meta = read_meta(layout, head_id)
    meta["files_sha256"]["model.skops"] = hashlib.sha256((folder / "model.skops").read_bytes()).hexdigest()
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(StoreError, match="names types a head never holds.*_Plant"):
        load_head(layout, head_id)
    assert not (tmp_path / "ran").exists()


def test_an_unreadable_model_file_is_one_clear_error(head_store):
    store, head_id = head_store
    layout = resolve_store(store)
    folder = layout.heads / head_id
    (folder / "model.skops").write_bytes(b"not a zip archive")
    meta = read_meta(layout, head_id)
    meta["files_sha256"]["model.skops"] = hashlib.sha256(b"not a zip archive").hexdigest()
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(StoreError, match="is not a readable model file"):
        load_head(layout, head_id)


def test_trust_converts_a_head_of_an_earlier_version(head_store):
    store, head_id = head_store
    layout = resolve_store(store)
    estimator, _ = load_head(layout, head_id)
    _as_earlier_version(layout.heads / head_id, pickle.dumps(estimator))
    out = CliRunner().invoke(app, ["heads", "trust", head_id, "--store", str(store)])
    assert out.exit_code == 0 and "converted" in out.stdout
    again, meta = load_head(layout, head_id)
    assert (
        set(meta["files_sha256"]) == {"model.skops"} and not (layout.heads / head_id / PICKLE_FILE).exists()
    )
    assert type(again) is type(estimator)
    assert trust_head(layout, head_id) is False
    score = CliRunner().invoke(
        app, ["evaluate", "--head", head_id, "--features", "bugs@tiny", "--store", str(store)]
    )
    assert score.exit_code == 0, score.output
