"""`--engine ray` on a real local Ray cluster (2 CPUs, started once): the same rows as the local
engine, and its errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import copy_store, make_class_folders, via_store

from featstore.errors import DeviceError, InvalidOptionError
from featstore.scoring.tables import read_predictions
from featstore.store.layout import resolve_store
from featstore.store.shards import open_feature_set

extract = via_store("extract")
score = via_store("score")


def _rows(store, name):
    """(paths, digests, labels, features) of a set, by path (worker shards come in any order)."""
    with open_feature_set(resolve_store(store), name) as f:
        rows = f.rows()
        order = sorted(range(len(rows)), key=lambda i: rows.paths[i])
        X = f.read_features()[order]
        return (
            [rows.paths[i] for i in order],
            [rows.digests[i] for i in order],
            rows.labels[order].tolist(),
            X,
        )


def test_ray_extract_and_score_equal_the_local_engine_row_for_row(
    tmp_path, tiny_onnx, scoring_store, ray_cluster
):
    data = make_class_folders(tmp_path / "photos", classes=("cat", "dog", "eel"), n_per_class=10, seed=1)
    (data / "dog" / "bad.jpg").write_text("not an image")
    (data / "eel" / "copy.jpg").write_bytes((data / "cat" / "cat0.jpg").read_bytes())  # same digest twice
    local = extract(str(data), str(tiny_onnx), store=str(tmp_path / "a"), emissions=False)
    ray = extract(
        str(data), str(tiny_onnx), store=str(tmp_path / "b"), emissions=False, engine="ray", batch_size=4
    )
    assert ray.device == "ray (2 CPU actors)"
    for k in ("n_images", "n_computed", "n_skipped"):
        assert getattr(ray, k) == getattr(local, k), k
    assert [s.to_dict() for s in ray.skipped] == [s.to_dict() for s in local.skipped]
    pa, da, la, fa = _rows(tmp_path / "a", "photos@tiny")
    pb, db, lb, fb = _rows(tmp_path / "b", "photos@tiny")
    assert (pa, da, la) == (pb, db, lb)
    np.testing.assert_array_equal(fa, fb)
    again = extract(str(data), str(tiny_onnx), store=str(tmp_path / "b"), emissions=False, engine="ray")
    assert (again.n_computed, again.n_reused, again.written) == (0, 31, False)

    store = copy_store(scoring_store[0], tmp_path / "s")
    score(str(data), str(tmp_path / "local.parquet"), head="logi", store=str(store), emissions=False)
    r = score(
        str(data),
        str(tmp_path / "ray.parquet"),
        head="logi",
        store=str(store),
        emissions=False,
        engine="ray",
        batch_size=4,
    )
    assert (r.engine, r.device, r.n_computed, r.n_errors) == ("ray", "ray (2 CPU actors)", 31, 1)
    assert read_predictions(tmp_path / "ray.parquet") == read_predictions(tmp_path / "local.parquet")


def test_ray_engine_errors(tmp_path, tiny_onnx, photos, ray_cluster):
    with pytest.raises(DeviceError, match="--device cuda asked for, but the Ray cluster has no GPU"):
        extract(
            str(photos),
            str(tiny_onnx),
            store=str(tmp_path / "s"),
            engine="ray",
            device="cuda",
            emissions=False,
        )
    with pytest.raises(InvalidOptionError, match="engine: ray makes no augmented views"):
        extract(
            str(photos),
            str(tiny_onnx),
            store=str(tmp_path / "s"),
            engine="ray",
            augment="flip",
            copies=1,
            emissions=False,
        )
    with pytest.raises(InvalidOptionError, match="engine: must be one of local, ray, not 'dask'"):
        extract(str(photos), str(tiny_onnx), store=str(tmp_path / "s"), engine="dask")
    with pytest.raises(InvalidOptionError, match="ray_address: goes with engine ray"):
        extract(str(photos), str(tiny_onnx), store=str(tmp_path / "s"), ray_address="auto")


def test_without_ray_installed_the_error_names_the_extra(tmp_path, tiny_onnx, photos):
    code = (
        "import sys\n"
        "sys.modules['ray'] = None  # as if Ray were not installed\n"
        "from featstore.errors import MissingDependencyError\n"
        "from featstore import Store\n"
        "try:\n"
        f"    Store({str(tmp_path / 's')!r}, emissions=False).extract({str(photos)!r}, {str(tiny_onnx)!r}, engine='ray')\n"
        "except MissingDependencyError as err:\n"
        "    print(err)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "ray is needed for this step but is not installed" in out.stdout
    assert 'run: pip install "featstore[ray]"' in out.stdout


def test_cli_extract_with_ray(tmp_path, tiny_onnx, photos, ray_cluster):
    from typer.testing import CliRunner

    from featstore_cli.app import app

    args = ["extract", "-b", str(tiny_onnx), "-d", str(photos), "--store", str(tmp_path / "s")]
    out = CliRunner().invoke(app, [*args, "--engine", "ray", "--no-emissions", "--json"])
    assert out.exit_code == 0, out.output
    r = json.loads(out.stdout)
    assert (r["n_computed"], r["device"]) == (8, "ray (2 CPU actors)")


def test_ray_actors_run_the_runtime_and_precision_of_the_run(tmp_path, tiny_onnx, ray_cluster):
    """bf16 under OpenVINO (where the CPU has it) and fp32 under ONNX Runtime asked for: the
    actors run what the local engine runs, row for row."""
    from featstore.inference import openvino_runtime as ovr

    data = make_class_folders(tmp_path / "photos", n_per_class=4, seed=3)
    cases = [("onnxruntime", "fp32", "photos@tiny")]
    if ovr.installed() and ovr.has_bf16():
        cases.append(("auto", "bf16", "photos@tiny-bf16"))
    for runtime, precision, name in cases:
        kw = dict(emissions=False, runtime=runtime, precision=precision, n_check=0)
        local = extract(str(data), str(tiny_onnx), store=str(tmp_path / f"a{precision}"), **kw)
        ray = extract(str(data), str(tiny_onnx), store=str(tmp_path / f"b{precision}"), engine="ray", **kw)
        assert ray.backbone_digest == local.backbone_digest and ray.runtime == local.runtime
        np.testing.assert_array_equal(
            _rows(tmp_path / f"a{precision}", name)[3], _rows(tmp_path / f"b{precision}", name)[3]
        )


# ---------------------------------------------------------------- workers that write, in waves


def _worker_pids() -> list[int]:
    """Processes of Ray Data's actor pool (their title starts `ray::MapWorker`)."""
    import os

    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                title = open(f"/proc/{d}/cmdline", "rb").read()
            except OSError:
                continue
            if title.startswith(b"ray::MapWorker"):
                pids.append(int(d))
    return pids


def test_workers_write_the_shards_and_the_driver_commits_each_wave(
    tmp_path, tiny_onnx, ray_cluster, monkeypatch
):
    import featstore.extraction.waves as waves
    from featstore.store.parts import FeatureSource
    from featstore.store.shards import read_manifest

    monkeypatch.setattr(waves, "WAVE_IMAGES", 16)
    monkeypatch.setattr(waves, "BATCHES_PER_WAVE", 1)
    data = make_class_folders(tmp_path / "photos", n_per_class=20, seed=4)
    local = extract(str(data), str(tiny_onnx), store=str(tmp_path / "a"), emissions=False)

    def no_feature_bytes(*a, **k):
        raise AssertionError("the driver read features")

    monkeypatch.setattr(FeatureSource, "gather", no_feature_bytes)
    r = extract(
        str(data), str(tiny_onnx), store=str(tmp_path / "b"), emissions=False, engine="ray", batch_size=4
    )
    assert (r.n_computed, r.n_images, r.written) == (40, 40, True)
    m = read_manifest(resolve_store(tmp_path / "b").features / "photos@tiny")
    # 16 + 16 + 8 images: one version per wave, nothing more
    assert m.version == 3 and m.n_rows == 40
    monkeypatch.undo()
    assert _rows(tmp_path / "a", "photos@tiny")[:3] == _rows(tmp_path / "b", "photos@tiny")[:3]
    np.testing.assert_array_equal(
        _rows(tmp_path / "a", "photos@tiny")[3], _rows(tmp_path / "b", "photos@tiny")[3]
    )
    from featstore.store.maintenance import verify_store

    assert all(c.ok for c in verify_store(resolve_store(tmp_path / "b")))
    assert local.n_computed == 40


def test_a_worker_killed_mid_wave_loses_at_most_that_wave(tmp_path, tiny_onnx, ray_cluster, monkeypatch):
    import os
    import signal
    import threading
    import time

    import featstore.extraction.waves as waves
    from featstore.errors import FeatstoreError
    from featstore.store.maintenance import verify_store
    from featstore.store.shards import read_manifest

    monkeypatch.setattr(waves, "WAVE_IMAGES", 20)
    monkeypatch.setattr(waves, "BATCHES_PER_WAVE", 1)
    data = make_class_folders(tmp_path / "photos", n_per_class=60, seed=5)
    folder = resolve_store(tmp_path / "b").features / "photos@tiny"
    outcome: dict = {}

    def job():
        try:
            outcome["result"] = extract(
                str(data),
                str(tiny_onnx),
                store=str(tmp_path / "b"),
                emissions=False,
                engine="ray",
                batch_size=2,
            )
        except FeatstoreError as err:
            outcome["error"] = err

    t = threading.Thread(target=job)
    t.start()
    killed = []
    deadline = time.monotonic() + 240
    while t.is_alive() and time.monotonic() < deadline and not killed:
        m = read_manifest(folder) if (folder / "CURRENT").exists() else None
        if m is not None and m.version >= 2:  # two waves committed, the third under way
            for pid in _worker_pids()[:1]:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        time.sleep(0.01)
    t.join(timeout=300)
    assert killed, "no worker to kill"
    if "error" in outcome:  # Ray did not carry the wave over to the other worker: one clear line
        assert "the waves committed before are kept" in str(outcome["error"])
    layout = resolve_store(tmp_path / "b")
    assert all(c.ok for c in verify_store(layout))
    with open_feature_set(layout, "photos@tiny") as f:
        n_kept = len(f)
        assert n_kept >= 40 and len(set(f.rows().paths)) == n_kept  # no wave lost but the one in flight
    again = extract(str(data), str(tiny_onnx), store=str(tmp_path / "b"), emissions=False, engine="ray")
    assert again.n_computed == 120 - n_kept and again.n_images == 120
    local = extract(str(data), str(tiny_onnx), store=str(tmp_path / "a"), emissions=False)
    assert local.n_computed == 120
    assert _rows(tmp_path / "a", "photos@tiny")[:3] == _rows(tmp_path / "b", "photos@tiny")[:3]
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []
