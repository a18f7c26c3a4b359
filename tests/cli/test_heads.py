"""`featstore fit-head`, `evaluate` and `heads ls|show` through Typer's test runner."""

from __future__ import annotations

import json

from conftest import blobs, write_synthetic_set
from typer.testing import CliRunner

from featstore_cli.app import app

runner = CliRunner()
CLASSES = ["ant", "bee", "cow"]


def _store(tmp_path):
    X, y = blobs()
    write_synthetic_set(tmp_path / "s", "bugs@tiny", X, y, CLASSES)
    return str(tmp_path / "s")


def test_fit_head_table_then_ls_show_evaluate(tmp_path):
    store = _store(tmp_path)
    out = runner.invoke(
        app,
        [
            "fit-head",
            "logistic",
            "--features",
            "bugs@tiny",
            "--store",
            store,
            "--C",
            "0.1,1",
            "--no-emissions",
            "-q",
        ],
    )
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    assert lines[0].split() == [
        "kind",
        "train_accuracy",
        "val_accuracy",
        "test_accuracy",
        "test_macro_f1",
        "fit_seconds",
        "energy_kwh",
        "head_id",
    ]
    assert lines[2].startswith("logistic") and lines[3].startswith("saved ")
    head_id = lines[2].split()[-1]
    ls = json.loads(runner.invoke(app, ["heads", "ls", "--store", store, "--json"]).stdout)
    assert [h["head_id"] for h in ls] == [head_id] and ls[0]["kind"] == "logistic"
    show = runner.invoke(app, ["heads", "show", head_id, "--store", store])
    assert show.stdout.startswith(f"# Model card: {head_id}") and "## Limitations" in show.stdout
    ev = runner.invoke(app, ["evaluate", "--head", head_id, "--features", "bugs@tiny", "--store", store])
    assert ev.exit_code == 0 and ev.stdout.startswith(f"{head_id} on bugs@tiny: 90 images")
    evj = json.loads(
        runner.invoke(
            app, ["evaluate", "--head", head_id, "-f", "bugs@tiny", "--store", store, "--json"]
        ).stdout
    )
    assert evj["n_rows"] == 90 and evj["metrics"]["accuracy"] > 0.9


def test_fit_head_json(tmp_path):
    store = _store(tmp_path)
    out = runner.invoke(app, ["fit-head", "knn", "-f", "bugs@tiny", "--store", store, "--json", "--k", "3"])
    r = json.loads(out.stdout)
    assert r["kind"] == "knn" and r["config"]["k"] == 3 and r["emissions"]["country"] == "FRA"


def test_bad_inputs_are_one_line(tmp_path):
    store = _store(tmp_path)
    cases = [
        (
            ["fit-head", "forest", "-f", "bugs@tiny"],
            "Error: unknown head 'forest'; valid heads: svm, logistic, dense, knn, all",
        ),
        (
            ["fit-head", "logistic", "-f", "bugs@tiny", "--C", "0.1,abc"],
            "Error: --C must be a comma-separated list",
        ),
        (["fit-head", "logistic", "-f", "nope@x"], "Error: no feature set 'nope@x'"),
        (["evaluate", "--head", "nohead", "-f", "bugs@tiny"], "Error: no head 'nohead'"),
        (["heads", "show", "../../etc"], "Error: '../../etc' is not a head id"),
    ]
    for args, message in cases:
        out = runner.invoke(app, [*args, "--store", store])
        assert out.exit_code == 1, (args, out.output)
        assert out.stderr.startswith(message), out.stderr
        assert len(out.stderr.strip().splitlines()) == 1
    assert not list((tmp_path / "s" / "heads").glob("*-*")) if (tmp_path / "s" / "heads").exists() else True
