"""The report's sweeps, few-shot curves and misclassified test images, on a real store: photos
extracted with the tiny ONNX backbone, a sweep with an ensemble, a few-shot run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import make_class_folders, via_store

from featstore.report.build import build_report
from featstore.report.html import render_html
from featstore.report.markdown import render_markdown
from featstore.report.thumbnails import misclassified_thumbnails

extract = via_store("extract")
few_shot = via_store("few_shot")
sweep = via_store("sweep")


GRID = {"logistic": {"C": [0.1, 1.0]}, "knn": {"k": [1, 3]}}


@pytest.fixture(scope="module")
def searched(tmp_path_factory, tiny_onnx):
    """A store with pets@tiny (3 classes of 10 noise JPEGs: many mistakes), a sweep of 4 settings
    with the soft vote of the 2 best, and a few-shot run of the same grid."""
    root = tmp_path_factory.mktemp("searched")
    photos = make_class_folders(root / "pets", classes=("cat", "dog", "eel"), n_per_class=10)
    store = root / "store"
    extract(str(photos), str(tiny_onnx), store=str(store), emissions=False)
    swept = sweep(["pets@tiny"], grid=GRID, ensemble=2, name="p", store=str(store), emissions=False)
    shots = few_shot(
        "sweep", ["pets@tiny"], grid=GRID, shots=[1, 2], repeats=2, store=str(store), emissions=False
    )
    return store, photos, swept, shots


def test_a_sweep_is_its_heads_its_own_row_and_its_grid(searched):
    store, _, swept, shots = searched
    report = build_report(store)
    assert report.skipped == []
    by_id = {r.head_id or r.run_id: r for r in report.rows}
    row = by_id[swept.run_id]
    assert row.method == "sweep" and row.head == "4 settings" and row.dataset == "pets"
    assert row.test_accuracy == swept.rows[0]["test_accuracy"] and row.depends_on == [
        by_id[row.depends_on[0]].run_id
    ]
    assert row.total_seconds > row.seconds > 0
    for head in swept.heads:
        r = by_id[head.head_id]
        assert r.method == "frozen features + head" and r.head == head.kind and r.run_id == swept.run_id
        assert r.seconds == head.fit_seconds and r.energy_kwh is None
    (table,) = report.sweeps
    assert table.run_id == swept.run_id and table.rows == json.loads(json.dumps(swept.rows))
    (curves,) = report.fewshots
    assert curves.run_id == shots.run_id and curves.curves == shots.curves and curves.seeds == [0, 1]
    doc = report.to_dict()
    assert len(doc["sweeps"]) == 1 and len(doc["fewshots"]) == 1
    assert build_report(store, dataset="other").sweeps == []


def test_markdown_has_the_grid_and_the_curves(searched):
    store, _, swept, shots = searched
    md = render_markdown(build_report(store))
    assert f"### Sweep {swept.run_id}: 4 settings on pets@tiny" in md
    assert "| rank | setting | features | cv acc | cv std | test acc | fit s | chosen | head |" in md
    ens = next(h for h in swept.heads if h.kind == "ensemble")
    assert f"| not chosen: within noise | {ens.head_id} |" in md and "| - | greedy: " in md
    assert f"### Few-shot {shots.run_id} (sweep): test accuracy, mean ± std over 2 draws (seeds 0-1)" in md
    assert "| head | features | 1 | 2 |" in md and re.search(
        r"\| best \| pets@tiny \| \d+\.\d % ± \d+\.\d \|", md
    )


def test_html_has_the_plots_and_the_misclassified_test_images(searched):
    store, _, swept, _ = searched
    page = render_html(build_report(store))
    # the time scatter (no CO2 measured), the heads' reliability, the grid, the curves
    assert page.count('class="plot"') == 4
    assert f"Sweep {swept.run_id}" in page and "Few-shot " in page
    assert "Misclassified test images" in page
    thumbs = re.findall(
        r'<figure><img class="thumb" alt="([^"]+)" title="[^"]+" src="data:image/jpeg;base64,', page
    )
    assert thumbs and all(t.split("/")[0] in ("cat", "dog", "eel") for t in thumbs)
    assert re.search(r"<figcaption>(cat|dog|eel) \u2192 (cat|dog|eel) \(\d\.\d\d\)</figcaption>", page)


def test_images_that_moved_or_changed_are_left_out_and_named(searched, tmp_path):
    store, photos, swept, _ = searched
    folder = Path(store) / "heads" / swept.heads[0].head_id
    items = json.loads((folder / "misclassified.json").read_text())
    assert items and {"path", "root", "digest", "true", "predicted", "probability"} <= set(items[0])
    shown, note = misclassified_thumbnails(folder)
    assert len(shown) == min(12, len(items)) and note is None
    first = Path(items[0]["root"]) / items[0]["path"]
    data = first.read_bytes()
    try:
        first.write_bytes(data + b"changed")
        shown2, note2 = misclassified_thumbnails(folder)
        assert note2 == (
            f"head {folder.name}: 1 misclassified test image(s) no longer at their paths (moved, changed or "
            "unreadable); not shown"
        )
        assert items[0]["path"] not in [t.path for t in shown2]
    finally:
        first.write_bytes(data)
    empty = tmp_path / "old-head"
    empty.mkdir()
    assert misclassified_thumbnails(empty) == (
        [],
        "head old-head: no misclassified.json (fitted by an older featstore)",
    )


def test_a_sweep_whose_table_is_gone_is_named(searched, tmp_path):
    import shutil

    store, _, swept, _ = searched
    copy = shutil.copytree(store, tmp_path / "store")
    for f in (copy / "heads" / "comparisons").glob("sweep-*.json"):
        f.unlink()
    report = build_report(copy)
    assert report.sweeps == [] and any(
        s.startswith(f"sweep run {swept.run_id}: its table ") and s.endswith("; grid left out")
        for s in report.skipped
    )


def test_a_head_the_sweep_saved_and_that_was_removed_is_named(searched, tmp_path):
    import shutil

    store, _, swept, _ = searched
    copy = shutil.copytree(store, tmp_path / "store")
    gone = swept.heads[1].head_id
    shutil.rmtree(copy / "heads" / gone)
    report = build_report(copy)
    assert (
        f"sweep run {swept.run_id}: head {gone} is no longer in {copy / 'heads'}; left out" in report.skipped
    )
    assert gone not in {r.head_id for r in report.rows}
