"""`featstore store ls|show|rm|verify` and `featstore backbones`."""

from __future__ import annotations

import json

from conftest import via_store
from typer.testing import CliRunner

from featstore.options import JobOptions
from featstore_cli.app import app

extract = via_store("extract")


runner = CliRunner()


def _fill(photos, store, tiny_onnx):
    job = JobOptions(store=None if store is None else str(store), emissions=False)
    extract(str(photos), str(tiny_onnx), job=job)


def test_ls_formats(photos, store, tiny_onnx):
    _fill(photos, store, tiny_onnx)
    table = runner.invoke(app, ["store", "ls", "--store", str(store)])
    assert table.exit_code == 0
    header, rule, row = table.stdout.splitlines()
    assert header.split() == [
        "name",
        "n_rows",
        "n_features",
        "n_classes",
        "dtype",
        "size_mb",
        "n_shards",
        "updated",
        "status",
    ]
    assert row.split()[:5] == ["photos@tiny", "8", "8", "2", "float32"] and row.endswith("ok")
    rows = json.loads(runner.invoke(app, ["store", "ls", "--store", str(store), "--json"]).stdout)
    assert rows[0]["n_rows"] == 8
    nl = runner.invoke(app, ["store", "ls", "--store", str(store), "--nl"]).stdout.splitlines()
    assert json.loads(nl[0])["name"] == "photos@tiny"
    csv = runner.invoke(app, ["store", "ls", "--store", str(store), "--csv"]).stdout.splitlines()
    assert csv[0].startswith("name,dataset,backbone,n_rows") and csv[1].startswith(
        "photos@tiny,photos,tiny,8"
    )
    both = runner.invoke(app, ["store", "ls", "--store", str(store), "--json", "--csv"])
    assert both.exit_code == 2 and "choose one output format" in both.stderr


def test_ls_empty_store(store):
    out = runner.invoke(app, ["store", "ls", "--store", str(store)])
    assert out.exit_code == 0 and out.stdout == "(none)\n"


def test_show(photos, store, tiny_onnx):
    _fill(photos, store, tiny_onnx)
    out = runner.invoke(app, ["store", "show", "photos@tiny", "--store", str(store)])
    assert out.exit_code == 0
    assert "  n_rows: 8" in out.stdout and "  backbone: tiny" in out.stdout
    assert "cat         4" in out.stdout
    info = json.loads(
        runner.invoke(app, ["store", "show", "photos@tiny", "--store", str(store), "--json"]).stdout
    )
    assert info["per_class"] == {"cat": 4, "dog": 4} and info["per_split"] == {"(none)": 8}


def test_verify_and_damage(photos, store, tiny_onnx):
    _fill(photos, store, tiny_onnx)
    ok = runner.invoke(app, ["store", "verify", "--store", str(store)])
    assert ok.exit_code == 0 and ok.stdout.splitlines()[-1] == "3 files checked, 0 damaged"
    (path,) = (store / "features" / "photos@tiny").glob("shard-*.h5")
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 32] = b"\xff" * 32
    path.write_bytes(bytes(data))
    bad = runner.invoke(app, ["store", "verify", "--store", str(store)])
    assert bad.exit_code == 1
    assert f"DAMAGED  feature set  {path.parent}" in bad.stdout
    assert f"shard {path.name}: whole-file checksum does not match" in bad.stdout
    assert runner.invoke(app, ["store", "ls", "--store", str(store)]).exit_code == 0


def test_rm(photos, store, tiny_onnx):
    _fill(photos, store, tiny_onnx)
    no = runner.invoke(app, ["store", "rm", "photos@tiny", "--store", str(store)], input="n\n")
    assert no.exit_code == 1 and (store / "features" / "photos@tiny" / "CURRENT").exists()
    yes = runner.invoke(app, ["store", "rm", "photos@tiny", "--store", str(store), "--yes"])
    assert yes.exit_code == 0 and yes.stdout.startswith("removed ")
    again = runner.invoke(app, ["store", "rm", "photos@tiny", "--store", str(store), "--yes"])
    assert again.exit_code == 1 and "no feature set 'photos@tiny'" in again.stderr


def test_store_from_environment(photos, tmp_path, tiny_onnx, monkeypatch):
    monkeypatch.setenv("FEATSTORE_HOME", str(tmp_path / "envstore"))
    _fill(photos, None, tiny_onnx)
    out = runner.invoke(app, ["store", "ls", "--json"])
    assert json.loads(out.stdout)[0]["name"] == "photos@tiny"


def test_backbones_table_and_json(keras_home):
    out = runner.invoke(app, ["backbones"])
    assert out.exit_code == 0
    lines = out.stdout.splitlines()
    assert lines[0].split() == [
        "name",
        "source",
        "input_size",
        "n_features",
        "params_m",
        "gflops",
        "preprocess",
        "weights_mb",
        "imagenet",
    ]
    vgg = lines[2].split()
    assert vgg[:5] == ["vgg16", "keras-app", "224", "512", "14.71"] and vgg[-2:] == ["58.9", "missing"]
    rows = json.loads(runner.invoke(app, ["backbones", "--json"]).stdout)
    assert len(rows) == 34 and rows[0]["weights_file"] == "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"


def test_help_and_version():
    out = runner.invoke(app, ["--help"])
    assert out.exit_code == 0 and "extract" in out.stdout and "store" in out.stdout
    assert runner.invoke(app, ["--version"]).stdout.startswith("featstore ")


def test_rm_and_show_refuse_a_path_as_name(store, tmp_path):
    outside = store / "victim.h5"
    store.mkdir(parents=True, exist_ok=True)
    outside.write_bytes(b"not a feature set of the store")
    for args in (["rm", "../victim", "--yes"], ["show", "../victim"], ["show", ""]):
        out = runner.invoke(app, ["store", *args, "--store", str(store)])
        assert out.exit_code == 1 and "must be a feature set name such as photos@vgg16, not '" in out.stderr
    assert outside.exists()
