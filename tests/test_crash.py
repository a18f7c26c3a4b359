"""Runs killed with SIGKILL at several moments, and concurrent runs on one feature set."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from conftest import build_tiny_onnx, make_class_folders, via_store

from featstore.store.featuresets import feature_set_lock, is_locked
from featstore.store.layout import resolve_store
from featstore.store.maintenance import verify_store
from featstore.store.parts import parts_dir
from featstore.store.shards import open_set

extract = via_store("extract")


@pytest.fixture(scope="module")
def wide_onnx(tmp_path_factory):
    """A tiny backbone with many features, so the final file takes a while to write."""
    return build_tiny_onnx(tmp_path_factory.mktemp("wide") / "wide.onnx", n_features=4096)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "featstore_cli", *args]


#: One image per batch, one decode thread, no emissions: many small steps to kill between.
SLOW = ("--no-emissions", "--quiet", "--batch-size", "1", "--workers", "1")


def _extract_cmd(data, store, backbone, *extra):
    return _cli(
        "extract", "--backbone", str(backbone), "--data", str(data), "--store", str(store), *SLOW, *extra
    )


def _snapshot(path):
    with open_set(path) as r:
        rows = r.rows()
        return dict(zip(rows.paths, r.read_features(), strict=True))


def _kill_when(proc, ready, timeout_s=60.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        if ready():
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.0005)
    proc.wait(timeout=60)


@pytest.mark.parametrize("moment", ["first-part", "half-way", "final-file", "random"])
def test_sigkill_then_resume(tmp_path, wide_onnx, moment):
    data = make_class_folders(tmp_path / "photos", n_per_class=30)
    ref_store, store = tmp_path / "ref", tmp_path / "store"
    path = resolve_store(store).feature_set("photos@wide")
    extract(str(data), str(wide_onnx), store=str(store), emissions=False)
    before = _snapshot(path)
    make_class_folders(data, classes=("cat", "dog", "eel"), n_per_class=60, seed=7, prefix="new")
    extract(str(data), str(wide_onnx), store=str(ref_store), emissions=False)
    want = _snapshot(resolve_store(ref_store).feature_set("photos@wide"))

    parts = parts_dir(path)
    n_parts = lambda: len(list(parts.glob("part-*.h5"))) if parts.is_dir() else 0  # noqa: E731
    proc = subprocess.Popen(
        _extract_cmd(data, store, wide_onnx), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    if moment == "first-part":
        _kill_when(proc, lambda: n_parts() >= 1)
    elif moment == "half-way":
        _kill_when(proc, lambda: n_parts() >= 60)
    elif moment == "final-file":
        folder = path.with_suffix("")
        _kill_when(proc, lambda: folder.is_dir() and any(folder.glob(".shard-*.tmp")))
    else:
        time.sleep(float(np.random.default_rng().uniform(0.5, 3.0)))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)

    layout = resolve_store(store)
    assert all(c.ok for c in verify_store(layout)), [c for c in verify_store(layout) if not c.ok]
    got = _snapshot(path)  # readable, and either the previous or the complete new file
    assert got.keys() in (before.keys(), want.keys())
    for p, v in got.items():
        np.testing.assert_array_equal(v, before.get(p, want[p]))

    out = subprocess.run(
        _extract_cmd(data, store, wide_onnx, "--json"), capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    final = _snapshot(path)
    assert final.keys() == want.keys()
    for p in want:
        np.testing.assert_array_equal(final[p], want[p])
    assert not parts.exists()
    import json

    result = json.loads(out.stdout)
    if moment in ("half-way", "final-file") and got.keys() == before.keys():
        assert result["n_resumed"] >= 59  # at most the batch being written was recomputed
    assert result["n_computed"] + result["n_resumed"] + result["n_reused"] == 240


def test_second_writer_is_refused_then_waits(tmp_path, wide_onnx):
    import json

    data = make_class_folders(tmp_path / "photos", n_per_class=150)
    store = tmp_path / "store"
    path = resolve_store(store).feature_set("photos@wide")
    path.parent.mkdir(parents=True, exist_ok=True)
    # another writer holds the lock (this test process, so the timing cannot race)
    with feature_set_lock(path):
        assert is_locked(path)
        refused = subprocess.run(
            _extract_cmd(data, store, wide_onnx), capture_output=True, text=True, timeout=60
        )
        assert refused.returncode == 1
        assert "is being written by another featstore process" in refused.stderr
        assert "--wait" in refused.stderr
        waiting = subprocess.Popen(
            _extract_cmd(data, store, wide_onnx, "--wait", "--json"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(4)
        assert waiting.poll() is None, waiting.communicate()
    out, err = waiting.communicate(timeout=300)
    assert waiting.returncode == 0, err
    assert json.loads(out)["n_computed"] == 300

    # two real processes at once: whichever locks second waits, then finds nothing to compute
    make_class_folders(data, n_per_class=150, seed=3, prefix="more")
    first = subprocess.Popen(
        _extract_cmd(data, store, wide_onnx, "--wait"), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    waited = subprocess.run(
        _extract_cmd(data, store, wide_onnx, "--wait", "--json"), capture_output=True, text=True, timeout=300
    )
    assert first.wait(timeout=300) == 0
    assert waited.returncode == 0, waited.stderr
    result = json.loads(waited.stdout)
    assert result["n_computed"] in (0, 300)  # 0 when the first process got the lock first
    assert result["n_computed"] + result["n_reused"] == 600
    assert all(c.ok for c in verify_store(resolve_store(store)))


def test_readers_never_see_a_half_written_file(tmp_path, wide_onnx):
    data = make_class_folders(tmp_path / "photos", n_per_class=60)
    store = tmp_path / "store"
    extract(str(data), str(wide_onnx), store=str(store), emissions=False)
    path = resolve_store(store).feature_set("photos@wide")
    errors, reads = [], [0]
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            try:
                with open_set(path) as r:
                    assert len(r) == 120 and r.read_features().shape == (120, 4096)
                reads[0] += 1
            except Exception as err:  # noqa: BLE001 - collected for the assertion
                errors.append(err)

    t = threading.Thread(target=reader)
    t.start()
    try:
        for _ in range(2):
            out = subprocess.run(
                _extract_cmd(data, store, wide_onnx, "--force"), capture_output=True, timeout=300
            )
            assert out.returncode == 0, out.stderr
    finally:
        stop.set()
        t.join()
    assert not errors and reads[0] > 0
    assert os.path.exists(path.with_suffix("") / "CURRENT")


# ---------------------------------------------------------------- score


@pytest.fixture(scope="module")
def wide_head_store(tmp_path_factory, wide_onnx):
    """A store with a logistic head `w` on features of the wide backbone."""
    from conftest import via_store

    fit_head = via_store("fit_head")

    root = tmp_path_factory.mktemp("wide-head")
    data = make_class_folders(root / "photos", n_per_class=10)
    extract(str(data), str(wide_onnx), store=str(root / "store"), emissions=False)
    fit_head("logistic", ["photos@wide"], store=str(root / "store"), name="w", C=[1.0], emissions=False)
    return root / "store"


def _score_cmd(store, data, out, *extra):
    args = ("--head", "w", "--input", str(data), "--output", str(out), "--store", str(store))
    return _cli("score", *args, *SLOW, *extra)


@pytest.mark.parametrize("moment", ["first-part", "half-way", "every-part-written", "random"])
def test_score_sigkill_then_rerun_gives_the_whole_table_once(tmp_path, wide_head_store, moment):
    import shutil

    from featstore.scoring.tables import read_predictions

    store = tmp_path / "store"
    shutil.copytree(wide_head_store, store)
    data = make_class_folders(tmp_path / "new", classes=("a", "b", "c"), n_per_class=25, seed=3)
    (data / "a" / "bad.jpg").write_text("not an image")
    ref = subprocess.run(
        _score_cmd(store, data, tmp_path / "ref.jsonl"), capture_output=True, text=True, timeout=300
    )
    assert ref.returncode == 0, ref.stderr
    want = read_predictions(tmp_path / "ref.jsonl")
    assert len(want) == 76

    out = tmp_path / "p.jsonl"
    n_parts = lambda: len(list(store.glob("scores/*/stage0.parts/part-*.h5")))  # noqa: E731
    proc = subprocess.Popen(_score_cmd(store, data, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if moment == "first-part":
        _kill_when(proc, lambda: n_parts() >= 1)
    elif moment == "half-way":
        _kill_when(proc, lambda: n_parts() >= 37)
    elif moment == "every-part-written":
        _kill_when(proc, lambda: n_parts() >= 75)
    else:
        time.sleep(float(np.random.default_rng().uniform(0.5, 3.0)))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)

    finished = out.exists()  # the kill came after the rename: the table is whole
    if not finished:
        done = n_parts()
        again = subprocess.run(
            _score_cmd(store, data, out, "--json"), capture_output=True, text=True, timeout=300
        )
        assert again.returncode == 0, again.stderr
        import json

        r = json.loads(again.stdout)
        assert r["n_resumed"] >= done - 1 and r["n_resumed"] + r["n_computed"] == 75
    got = read_predictions(out)
    assert got == want
    assert len({row["path"] for row in got}) == len(got)
    assert list(tmp_path.glob(".p.jsonl.*")) == [] and list(store.glob("scores/*/stage0.parts")) == []
    assert all(c.ok for c in verify_store(resolve_store(store)))


def test_finetune_sigkill_then_resume(tmp_path):
    """Kill a real `featstore finetune` while it trains; --resume finishes it and the store verifies."""
    import json

    from featstore.store.run_files import read_run_meta, run_dir, run_file

    data = make_class_folders(tmp_path / "photos", classes=("cat", "dog", "eel"), n_per_class=20)
    store = tmp_path / "store"
    layout = resolve_store(store)
    folder = run_dir(layout, "killed")
    args = ["--store", str(store), "--no-emissions", "--quiet"]
    train = ["finetune", "--backbone", "simple-cnn", "--data", str(data), "--input-size", "32"]
    proc = subprocess.Popen(
        _cli(*train, "--epochs", "8", "--patience", "99", "--batch-size", "4", "--name", "killed", *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    # killed as soon as the epoch-2 checkpoint is renamed into place: state.json may still name
    # epoch 1's, which must then still be there
    _kill_when(proc, lambda: (folder / "ckpt-0002.keras").exists(), timeout_s=120)
    assert proc.returncode == -signal.SIGKILL
    state = json.loads((folder / "state.json").read_text())
    assert 1 <= state["epochs_done"] < 8 and (folder / state["checkpoint"]).is_file()
    assert read_run_meta(layout, "killed")["status"] == "running"
    checks = verify_store(layout)
    assert all(c.ok for c in checks)
    assert any("unfinished" in n and "--resume killed" in n for c in checks for n in c.notes)

    out = subprocess.run(
        _cli("finetune", "--resume", "killed", *args[:-1], "--json"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["resumed_from_epoch"] == state["epochs_done"] and result["epochs_run"] == 8
    history = json.loads((folder / "history.json").read_text())
    assert len(history["loss"]) == 8 and history["loss"][: state["epochs_done"]] == state["history"]["loss"]
    meta = read_run_meta(layout, "killed")
    assert meta["status"] == "done" and meta["sessions"] == 2
    run_file(layout, "killed", "classifier.onnx")
    assert not list(folder.glob("ckpt-*")) and not (folder / "pixels.npy").exists()
    assert all(c.ok for c in verify_store(layout))
    verify = subprocess.run(_cli("store", "verify", "--store", str(store)), capture_output=True, text=True)
    assert verify.returncode == 0 and "ok       finetune run" in verify.stdout
