"""`featstore weights ls|pull|verify|import`, and `extract` downloading its weights, through the CLI."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from conftest import make_class_folders
from typer.testing import CliRunner
from weights_server import FILE, NAME, WeightsServer, payload, record, register

from featstore_cli.app import app

runner = CliRunner()


@pytest.fixture
def served(keras_home, monkeypatch):
    server = WeightsServer()
    data = payload()
    server.files[f"/keras/{FILE}"] = data
    register(monkeypatch, record(server.url(f"/keras/{FILE}"), data))
    monkeypatch.delenv("FEATSTORE_OFFLINE", raising=False)
    yield server, data, keras_home / "models" / FILE
    server.close()


def test_ls_pull_verify(served):
    server, data, path = served
    out = runner.invoke(app, ["weights", "ls", NAME, "vgg16", "--json"])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.stdout)
    assert [(r["backbone"], r["state"]) for r in rows] == [(NAME, "missing"), ("vgg16", "missing")]
    out = runner.invoke(app, ["weights", "pull", NAME, "--json", "--quiet"])
    assert out.exit_code == 0, out.output
    [row] = json.loads(out.stdout)
    assert row["action"] == "downloaded" and row["bytes"] == len(data) and row["path"] == str(path)
    out = runner.invoke(app, ["weights", "verify"])
    assert out.exit_code == 0 and out.stdout.splitlines()[-1] == "1 of 1 weight files ok"
    path.write_bytes(b"damaged")
    out = runner.invoke(app, ["weights", "verify"])
    assert out.exit_code == 1 and "not official" in out.stdout and "0 of 1 weight files ok" in out.stdout


def test_pull_errors_are_one_line(served):
    server, _, path = served
    server.behaviour.status = 404
    out = runner.invoke(app, ["weights", "pull", NAME, "--quiet"])
    assert out.exit_code == 1
    [line] = out.stderr.splitlines()
    assert line.startswith("Error: cannot download ImageNet weights for mobilenet_v2: HTTP 404")
    out = runner.invoke(app, ["weights", "pull", "--quiet"])
    assert out.exit_code == 1 and "not both" in out.stderr


def test_import_refuses_then_trusts(served, tmp_path):
    _, _, path = served
    converted = tmp_path / "converted.h5"
    converted.write_bytes(b"converted")
    out = runner.invoke(app, ["weights", "import", str(converted), "--backbone", NAME])
    assert out.exit_code == 1 and "pass --trust" in out.stderr and not path.exists()
    out = runner.invoke(app, ["weights", "import", str(converted), "--backbone", NAME, "--trust"])
    assert out.exit_code == 0 and out.stdout.startswith(f"{NAME}: trusted")
    assert out.stderr.startswith("warning: ") and path.read_bytes() == b"converted"


def test_backbones_shows_the_weights_state(served):
    _, data, path = served
    path.write_bytes(data)
    out = runner.invoke(app, ["backbones", "--json"])
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert rows[NAME]["imagenet"] == "official" and rows["vgg16"]["imagenet"] == "missing"
    assert rows["vgg16"]["weights_mb"] == 58.9


def test_extract_offline_names_the_ways_out(keras_home, photos, store):
    out = runner.invoke(app, ["extract", "-b", "vgg16", "-d", str(photos), "--store", str(store)])
    assert out.exit_code == 1
    [line] = out.stderr.splitlines()
    assert "FEATSTORE_OFFLINE=1 forbids downloading them from https://storage.googleapis.com/" in line
    assert "featstore weights import FILE --backbone vgg16" in line and "--weights none" in line


def test_input_size_too_large_is_one_line_before_any_work(photos, store):
    out = runner.invoke(
        app,
        [
            "extract",
            "-b",
            "vgg16",
            "-d",
            str(photos),
            "--weights",
            "none",
            "--input-size",
            "100000",
            "--store",
            str(store),
        ],
    )
    assert out.exit_code == 1
    [line] = out.stderr.splitlines()
    assert (
        line.startswith("Error: an input size of 100000 px is too large for vgg16") and "use at most" in line
    )
    assert not store.exists()


def keras_weights_file(path, size_px: int = 32):
    """Write real Keras MobileNetV2 no-top weights (random init) in Keras' legacy h5 format."""
    import h5py
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    keras.utils.set_random_seed(7)
    model = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(size_px, size_px, 3))
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    return path


@pytest.mark.slow
def test_extract_downloads_real_weights_and_uses_them(keras_home, monkeypatch, tmp_path, store):
    """The whole path: a real Keras weight file served over HTTP, downloaded by `extract`, hash
    checked, exported to ONNX and run; the features equal those of `--weights PATH`."""
    from featstore.store.layout import resolve_store
    from featstore.store.shards import open_feature_set

    weights = keras_weights_file(tmp_path / FILE)
    data = weights.read_bytes()
    server = WeightsServer()
    server.files[f"/keras/{FILE}"] = data
    register(monkeypatch, record(server.url(f"/keras/{FILE}"), data))
    monkeypatch.delenv("FEATSTORE_OFFLINE", raising=False)
    photos = make_class_folders(tmp_path / "photos")
    try:
        args = [
            "extract",
            "-b",
            NAME,
            "-d",
            str(photos),
            "--input-size",
            "32",
            "--store",
            str(store),
            "--no-emissions",
        ]
        out = runner.invoke(app, args)
        assert out.exit_code == 0, out.output
        assert "downloading ImageNet weights for mobilenet_v2" in out.stderr
        assert (keras_home / "models" / FILE).read_bytes() == data
        out = runner.invoke(app, [*args, "--weights", str(weights)])
        assert out.exit_code == 0, out.output
    finally:
        server.close()
    layout = resolve_store(store)
    a = open_feature_set(layout, "photos@mobilenet_v2-32px").read_features()
    b = open_feature_set(layout, f"photos@mobilenet_v2-32px-w{hashlib.sha256(data).hexdigest()[:8]}")
    np.testing.assert_allclose(a, b.read_features(), rtol=1e-5, atol=1e-6)
