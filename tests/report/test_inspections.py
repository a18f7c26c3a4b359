"""The report's inspections fragment (`featstore.report.inspections`): the latest result of each
check and feature set, as HTML."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import blobs, via_store, write_synthetic_set

from featstore.report.inspections import inspect_runs, inspected_datasets, render_inspections
from featstore.store.layout import resolve_store

find_duplicates = via_store("inspect_duplicates")
find_leaks = via_store("inspect_leaks")
draw_map = via_store("inspect_map")


@pytest.fixture
def inspected(tmp_path):
    store = tmp_path / "s"
    X, y = blobs(15, 2, 8)
    X[1] = X[0]  # train, train
    X[12] = X[3]  # test, train: a leak
    X[20] = X[2]  # train, train, another label
    split = (["train"] * 10 + ["test"] * 5) * 2
    write_synthetic_set(store, "bugs@tiny", X, y, ["ant", "b<e>e"], split=split)
    kw = {"store": str(store), "emissions": False}
    first = find_duplicates("bugs@tiny", threshold=0.5, **kw)
    dup = find_duplicates("bugs@tiny", threshold=0.9999, **kw)
    leaks = find_leaks("bugs@tiny", threshold=0.9999, **kw)
    drawn = draw_map("bugs@tiny", method="pca", folds=3, **kw)
    return resolve_store(store), first, dup, leaks, drawn


def test_latest_run_of_each_check_in_check_order(inspected):
    layout, first, dup, leaks, drawn = inspected
    runs = inspect_runs(layout, "bugs")
    assert [r["id"] for r in runs] == [dup.run_id, leaks.run_id, drawn.run_id]
    assert inspect_runs(layout, "other") == [] and inspected_datasets(layout) == ["bugs"]


def test_fragment_holds_tables_and_the_map(inspected):
    layout, first, dup, leaks, drawn = inspected
    notes: list[str] = []
    html = render_inspections(layout, "bugs", notes)
    assert notes == [] and html.startswith("<h3>Inspections</h3>")
    assert f"Duplicates: bugs@tiny (run {dup.run_id})" in html and first.run_id not in html
    assert "3 near-duplicate cluster(s) (6 images) at cosine &gt;= 0.9999; 1 cluster(s) mix labels" in html
    assert "b&lt;e&gt;e" in html and "b<e>e" not in html  # class names escaped
    assert f"Leaks: bugs@tiny (run {leaks.run_id})" in html and "test: 1 of 10 images against train" in html
    assert (
        html.count("data:image/png;base64,") == 1
        and "misclassified by a cross-validated logistic head" in html
    )
    assert html.count('<table class="sortable">') == 3
    assert render_inspections(layout, "other") == ""


def test_a_deleted_result_is_left_out_with_a_note(inspected):
    layout, first, dup, leaks, drawn = inspected
    (layout.root / "inspections" / f"{leaks.run_id}.json").unlink()
    (layout.root / "inspections" / f"{drawn.run_id}.png").unlink()
    notes: list[str] = []
    html = render_inspections(layout, "bugs", notes)
    assert (
        len(notes) == 1
        and notes[0].startswith(f"inspect run {leaks.run_id} (leaks):")
        and "is missing" in notes[0]
    )
    assert "Leaks:" not in html and "Duplicates:" in html and ".png is missing; no picture" in html
    (layout.root / "inspections" / f"{dup.run_id}.json").write_text("[1, 2]")
    render_inspections(layout, "bugs", notes)
    assert any(
        n.startswith(f"inspect run {dup.run_id} (duplicates):") and "cannot be read" in n for n in notes
    )


def test_long_results_are_cut_with_a_pointer_to_the_file(tmp_path):
    store = tmp_path / "s"
    rng = np.random.default_rng(0)
    X = np.repeat(rng.normal(size=(30, 16)), 2, axis=0).astype(np.float32)  # 30 pairs of equal rows
    write_synthetic_set(store, "many@tiny", X, np.zeros(60, int), ["a"])
    r = find_duplicates("many@tiny", store=str(store), emissions=False, threshold=0.99999)
    assert r.summary["n_near_clusters"] == 30
    html = render_inspections(resolve_store(store), "many")
    assert f"First 20 of 30; all of them in {r.path}." in html
    assert json.loads(open(r.path).read())["summary"]["n_near_clusters"] == 30


def test_the_html_page_shows_inspections_of_a_dataset_without_other_runs(inspected):
    from featstore.report.build import build_report
    from featstore.report.html import render_html

    layout, first, dup, leaks, drawn = inspected
    page = render_html(build_report(layout), layout.root)
    assert "<h2>bugs</h2>" in page and f"Duplicates: bugs@tiny (run {dup.run_id})" in page
    assert page.count("<h3>Inspections</h3>") == 1
    assert "Duplicates:" in render_html(build_report(layout, dataset="bugs"), layout.root)
    assert "Duplicates:" not in render_html(build_report(layout, dataset="other"), layout.root)
