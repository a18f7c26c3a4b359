"""`featstore score` and `featstore export` through Typer's test runner, bad input first."""

from __future__ import annotations

import json
import os

import pytest
from conftest import copy_store, make_class_folders
from typer.testing import CliRunner

from featstore.scoring.tables import read_predictions
from featstore_cli.app import app

runner = CliRunner()


def _score(store, inp, out, *extra):
    return runner.invoke(
        app,
        [
            "score",
            "--input",
            str(inp),
            "--output",
            str(out),
            "--store",
            str(store),
            "--no-emissions",
            "-q",
            *extra,
        ],
    )


def test_score_prints_a_summary_and_json(tmp_path, scoring_store):
    store, _ = scoring_store
    new = make_class_folders(tmp_path / "new", classes=("x",), n_per_class=3, seed=2)
    (new / "x" / "zero.jpg").write_bytes(b"")
    out = _score(store, new, tmp_path / "p.parquet", "--head", "logi", "--top-k", "2")
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    assert lines[0] == f"logi: 4 images -> {tmp_path / 'p.parquet'} (parquet, top 2 of 3 classes)"
    assert lines[1] == "  scored 3 (cached 0, resumed 0, computed 3), error rows 1, skipped 0"
    assert lines[-2:] == ["error rows:", f"  {new}/x/zero.jpg: empty file (0 bytes)"]
    js = _score(store, new, tmp_path / "p.csv", "--head", "logi", "--json")
    r = json.loads(js.stdout)
    assert (r["n_images"], r["n_errors"], r["format"], r["top_k"]) == (4, 1, "csv", 3)
    assert len(read_predictions(tmp_path / "p.csv")) == 4


def test_export_prints_what_it_wrote(tmp_path, scoring_store):
    store, _ = scoring_store
    out = runner.invoke(
        app, ["export", "--head", "logi", "--output", str(tmp_path / "m.onnx"), "--store", str(store)]
    )
    assert out.exit_code == 0, out.output
    assert out.stdout.startswith(f"logi -> {tmp_path / 'm.onnx'} (")
    assert (
        "input pixels (N, 16, 16, 3) uint8, resize squash; output probabilities (N, 3) float32" in out.stdout
    )
    js = json.loads(
        runner.invoke(
            app,
            [
                "export",
                "--head",
                "logi",
                "-o",
                str(tmp_path / "m.onnx"),
                "--store",
                str(store),
                "--overwrite",
                "--json",
            ],
        ).stdout
    )
    assert js["class_names"] == ["cat", "dog", "eel"] and js["max_abs_diff"] < 1e-4


BAD = [
    (["--head", "nope"], "Error: no head 'nope' in "),
    (["--model", "finetune:nope"], "Error: no fine-tune run 'nope' in "),
    (["--model", "nope"], "Error: --model: 'nope' is not a fine-tune run; write finetune:<run-id>"),
    (
        ["--head", "logi", "--model", "finetune:x"],
        "Error: --head: give exactly one: head (a head id) or model",
    ),
    ([], "Error: --head: give exactly one: head (a head id) or model"),
    (["--head", "logi", "--engine", "spark"], "Error: --engine: must be one of local, ray, not 'spark'"),
    (["--head", "logi", "--ray-address", "auto"], "Error: --ray-address: goes with engine ray"),
    (["--head", "logi", "--device", "cuda", "--force"], "Error: --device cuda asked for, but"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[" ".join(a) or "no-model" for a, _ in BAD])
def test_bad_model_options(tmp_path, scoring_store, args, message):
    store, photos = scoring_store
    out = _score(store, photos, tmp_path / "p.csv", *args)
    assert out.exit_code == 1, out.output
    assert out.stderr.startswith(message) and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert not (tmp_path / "p.csv").exists()


def test_bad_outputs_and_inputs_lose_nothing(tmp_path, scoring_store):
    store, photos = scoring_store
    out = tmp_path / "p.csv"
    out.write_text("previous table\n")
    r = _score(store, photos, out, "--head", "logi")
    assert (
        r.exit_code == 1
        and r.stderr == f"Error: output {out} exists already; pass --overwrite to replace it\n"
    )
    assert out.read_text() == "previous table\n"
    r = _score(store, photos, out, "--head", "logi", "--overwrite")
    assert r.exit_code == 0 and len(read_predictions(out)) == 45

    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = _score(store, photos, blocker / "sub" / "p.csv", "--head", "logi")
    assert r.exit_code == 1 and r.stderr.startswith(
        f"Error: cannot create the output folder {blocker / 'sub'}: "
    )
    r = _score(store, photos, tmp_path / "p.xlsx", "--head", "logi")
    assert r.exit_code == 1 and "must end in .parquet, .csv, .jsonl, .ndjson (the extension" in r.stderr
    r = _score(store, photos, tmp_path, "--head", "logi")
    assert r.exit_code == 1 and r.stderr == f"Error: output {tmp_path} is a folder; give a file name\n"
    (tmp_path / "empty").mkdir()
    r = _score(store, tmp_path / "empty", tmp_path / "q.csv", "--head", "logi")
    assert r.exit_code == 1 and r.stderr.startswith(f"Error: no images found in {tmp_path / 'empty'}")
    r = _score(store, tmp_path / "gone", tmp_path / "q.csv", "--head", "logi")
    assert r.exit_code == 1 and r.stderr.startswith(f"Error: input {tmp_path / 'gone'} does not exist")
    verify = runner.invoke(app, ["store", "verify", "--store", str(store)])
    assert verify.exit_code == 0, verify.stdout


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder(tmp_path, scoring_store):
    store, photos = scoring_store
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        r = _score(store, photos, ro / "p.csv", "--head", "logi")
    finally:
        ro.chmod(0o755)
    assert r.exit_code == 1 and r.stderr.startswith(f"Error: cannot write to the output folder {ro}: ")


def test_missing_backbone_and_export_errors(tmp_path, scoring_store):
    store = copy_store(scoring_store[0], tmp_path / "store")
    for f in (store / "backbones").glob("*.onnx"):
        f.unlink()
    r = _score(store, scoring_store[1], tmp_path / "p.csv", "--head", "logi")
    assert r.exit_code == 1 and "but its ONNX file is missing from" in r.stderr
    assert "run the `featstore extract` that made photos@tiny again" in r.stderr
    r = runner.invoke(
        app, ["export", "--head", "logi", "-o", str(tmp_path / "m.onnx"), "--store", str(store)]
    )
    assert r.exit_code == 1 and "ONNX file is missing" in r.stderr and not (tmp_path / "m.onnx").exists()
    r = runner.invoke(
        app, ["export", "--head", "nope", "-o", str(tmp_path / "m.onnx"), "--store", str(store)]
    )
    assert r.exit_code == 1 and r.stderr.startswith("Error: no head 'nope' in ")
    r = runner.invoke(app, ["export", "--head", "logi", "-o", str(tmp_path / "m.txt"), "--store", str(store)])
    assert r.exit_code == 1 and "must end in .onnx" in r.stderr
