"""`featstore report` through Typer's test runner, on a hand-written store with known runs."""

from __future__ import annotations

import json

from run_log_fixtures import HEADER, known_store
from typer.testing import CliRunner

from featstore_cli.app import app

runner = CliRunner()


def test_markdown_to_stdout(tmp_path):
    store = str(known_store(tmp_path / "s"))
    out = runner.invoke(app, ["report", "--store", store])
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    assert lines[:3] == ["# featstore report", "", f"Store: `{store}`."]
    assert lines.count(HEADER) == 2 and out.stderr == ""
    assert lines[lines.index("## flowers") + 4].endswith("| ft-1 |")


def test_json_and_dataset_filter(tmp_path):
    store = str(known_store(tmp_path / "s"))
    out = runner.invoke(app, ["report", "--store", store, "--dataset", "digits", "--json"])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.stdout)
    assert [r["head_id"] or r["run_id"] for r in rows] == ["dense-d", "sc-1", "ex-d"]
    assert rows[0]["total_seconds"] == 14.0 and rows[0]["depends_on"] == ["ex-d"]
    assert list(rows[0])[:4] == ["dataset", "method", "backbone", "head"]
    csv = runner.invoke(app, ["report", "--store", store, "--dataset", "digits", "--csv"]).stdout
    assert (
        csv.splitlines()[0].startswith("dataset,method,backbone,head,epochs,") and len(csv.splitlines()) == 4
    )


def test_html_written_and_skipped_notes_on_stderr(tmp_path):
    root = known_store(tmp_path / "s")
    (root / "heads" / "knn-c" / "meta.json").unlink()
    page = tmp_path / "out" / "report.html"
    out = runner.invoke(app, ["report", "--store", str(root), "--format", "html", "--output", str(page)])
    assert out.exit_code == 0, out.output
    assert out.stdout == f"wrote {page}: 8 rows, 1 skipped\n"
    assert (
        out.stderr == f"skipped: fit-head run fit-c: head knn-c is no longer in {root / 'heads'}; left out\n"
    )
    text = page.read_text()
    assert text.startswith("<!doctype html>") and text.count('<table class="sortable">') == 2
    assert "data:image/png;base64," in text and "head knn-c is no longer in" in text


def test_empty_store_and_bad_usage(tmp_path):
    out = runner.invoke(app, ["report", "--store", str(tmp_path / "none")])
    assert out.exit_code == 0 and "No runs to compare" in out.stdout
    bad = runner.invoke(app, ["report", "--store", str(tmp_path / "none"), "--format", "pdf"])
    assert bad.exit_code == 2 and "--format must be markdown or html, not 'pdf'" in bad.stderr
    both = runner.invoke(app, ["report", "--store", str(tmp_path), "--format", "html", "--json"])
    assert both.exit_code == 2


def test_a_sweep_and_few_shot_curves_in_the_report(tmp_path):
    from conftest import blobs, via_store, write_synthetic_set

    few_shot = via_store("few_shot")
    from conftest import via_store

    sweep = via_store("sweep")

    X, y = blobs()
    store = tmp_path / "s"
    write_synthetic_set(store, "bugs@tiny", X, y, ["ant", "bee", "cow"])
    grid = {"knn": {"k": [1, 3]}, "logistic": {"C": [1.0]}}
    swept = sweep(["bugs@tiny"], grid=grid, store=str(store), emissions=False)
    few_shot("knn", ["bugs@tiny"], shots=[1, 2], repeats=2, store=str(store), emissions=False)
    rows = json.loads(runner.invoke(app, ["report", "--store", str(store), "--json"]).stdout)
    assert [r["method"] for r in rows].count("sweep") == 1 and len(rows) == 3
    assert {r["head_id"] for r in rows if r["method"] != "sweep"} == {h.head_id for h in swept.heads}
    md = runner.invoke(app, ["report", "--store", str(store)]).stdout
    assert f"### Sweep {swept.run_id}: 3 settings on bugs@tiny" in md and "### Few-shot few-shot-" in md
