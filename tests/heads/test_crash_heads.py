"""`fit-head` killed with SIGKILL, three `fit-head`s of one name at once, heads fitted while the
feature set is rewritten, and `store verify` on head folders."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import blobs, build_tiny_onnx, make_class_folders, via_store, write_synthetic_set

from featstore.errors import HeadError
from featstore.files import file_lock
from featstore.store.head_files import save_head
from featstore.store.layout import resolve_store
from featstore.store.maintenance import verify_store
from featstore.store.runlog import read_runs

extract = via_store("extract")
fit_head = via_store("fit_head")


TAKEN = "head same exists already; choose another --name or remove it"


def _fit_cmd(store, name, kind="svm"):
    return [sys.executable, "-m", "featstore_cli", "fit-head", kind, "--features", "blobs@bb",
            "--name", name, "--store", str(store), "--no-emissions", "--quiet"]  # fmt: skip


def _files(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def _metrics(store, name):
    meta = json.loads((resolve_store(store).heads / name / "meta.json").read_text())
    return {part: meta["metrics"][part]["accuracy"] for part in ("train", "val", "test")}


@pytest.fixture(scope="module")
def blob_store(tmp_path_factory):
    """A store with a 1500-row feature set (an RBF svm takes a few seconds) and one head `h0`."""
    store = tmp_path_factory.mktemp("blobs") / "store"
    X, y = blobs(n_per_class=500, n_classes=3, n_features=64, seed=3)
    X += np.random.default_rng(1).normal(0, 3.0, X.shape).astype(np.float32)
    write_synthetic_set(store, "blobs@bb", X, y, ["a", "b", "c"])
    fit_head("logistic", ["blobs@bb"], store=str(store), name="h0", emissions=False)
    return store


@pytest.mark.parametrize("moment", ["saving", "random"])
def test_sigkill_fit_head_then_rerun(tmp_path, blob_store, moment):
    store = tmp_path / "store"
    shutil.copytree(blob_store, store)
    heads = resolve_store(store).heads
    h0 = _files(heads / "h0")
    proc = subprocess.Popen(_fit_cmd(store, "h1"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    if moment == "saving":
        while proc.poll() is None and time.monotonic() < deadline:
            if any(heads.glob(".h1.*")):
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.0005)
    else:
        time.sleep(float(np.random.default_rng().uniform(0.8, 3.0)))
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=120)

    checks = verify_store(resolve_store(store))
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]
    assert _files(heads / "h0") == h0  # the earlier head is untouched
    finished = (heads / "h1").exists()  # whole (verify above), or not at all
    assert finished or proc.returncode != 0  # a finished run saved it; a kill after the save may too
    if not finished:
        out = subprocess.run(_fit_cmd(store, "h1"), capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
    ref = tmp_path / "ref"
    shutil.copytree(blob_store, ref)
    fit_head("svm", ["blobs@bb"], store=str(ref), name="h1", emissions=False)
    assert _metrics(store, "h1") == _metrics(ref, "h1")  # same result as an uninterrupted run
    assert all(c.ok for c in verify_store(resolve_store(store)))


def test_three_fit_heads_of_one_name_started_together_give_one_head(tmp_path, blob_store):
    store = tmp_path / "store"
    shutil.copytree(blob_store, store)
    cmd = [*_fit_cmd(store, "same", kind="logistic"), "--C", "1"]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert sorted(p.returncode for p in procs) == [0, 1, 1], outs
    errors = [err for p, (_, err) in zip(procs, outs, strict=True) if p.returncode == 1]
    assert errors == [f"Error: {TAKEN}\n"] * 2  # one line each, no traceback
    heads = resolve_store(store).heads
    assert sorted(p.name for p in heads.iterdir() if not p.name.endswith(".lock")) == ["h0", "same"]
    runs, _ = read_runs(resolve_store(store))
    assert [r["head_id"] for r in runs if r["command"] == "fit-head"] == ["h0", "same"]  # losers log nothing
    assert all(c.ok for c in verify_store(resolve_store(store)))


def test_a_head_name_is_claimed_before_the_folder_is_written(tmp_path):
    layout = resolve_store(tmp_path / "store")
    layout.heads.mkdir(parents=True)
    meta = {"config": {"kind": "logistic"}}
    with file_lock(layout.heads / ".same.lock", "same"):  # another process is saving `same`
        with pytest.raises(HeadError, match=f"^{TAKEN}$"):
            save_head(layout, "same", {"weights": [1]}, meta)
    assert list(layout.heads.iterdir()) == [layout.heads / ".same.lock"]  # no folder, no temporary
    save_head(layout, "same", {"weights": [1]}, meta, {"card.md": b"first"})
    with pytest.raises(HeadError, match=f"^{TAKEN}$"):
        save_head(layout, "same", {"weights": [2]}, meta, {"card.md": b"second"})
    assert (layout.heads / "same" / "card.md").read_bytes() == b"first"
    assert sorted(p.name for p in layout.heads.iterdir()) == [".same.lock", "same"]


def test_fit_head_while_extract_rewrites_the_set(tmp_path):
    onnx = build_tiny_onnx(tmp_path / "wide.onnx", n_features=2048)
    data = make_class_folders(tmp_path / "photos", n_per_class=60)
    store = tmp_path / "store"
    extract(str(data), str(onnx), store=str(store), emissions=False)
    cmd = [sys.executable, "-m", "featstore_cli", "extract", "--backbone", str(onnx), "--data", str(data),
           "--store", str(store), "--no-emissions", "--quiet", "--force", "--batch-size", "1"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    n_fits = 0
    while proc.poll() is None or n_fits == 0:
        (r,) = fit_head("logistic", ["photos@wide"], store=str(store), C=[1.0], emissions=False)
        assert sum(r.split[f"n_{p}"] for p in ("train", "val", "test")) == 120  # every row, old or new
        n_fits += 1
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert n_fits >= 1
    checks = verify_store(resolve_store(store))
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]


def test_verify_reports_a_changed_head_file(tmp_path, blob_store):
    store = tmp_path / "store"
    shutil.copytree(blob_store, store)
    layout = resolve_store(store)
    (layout.heads / ".h9.abcd").mkdir()
    checks = {c.path: c for c in verify_store(layout)}
    assert checks[str(layout.heads / "h0")].ok
    assert "interrupted" in checks[str(layout.heads / ".h9.abcd")].notes[0]
    model = layout.heads / "h0" / "model.skops"
    model.write_bytes(model.read_bytes()[:-10] + b"0123456789")
    out = subprocess.run(
        [sys.executable, "-m", "featstore_cli", "store", "verify", "--store", str(store)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 1
    assert "model.skops does not match its recorded sha256" in out.stdout
    (layout.heads / "h0" / "meta.json").write_text("{not json")
    (bad,) = [c for c in verify_store(layout) if not c.ok]
    assert "meta.json missing or unreadable" in bad.problems[0]
