"""The comparison report from stores with known runs: numbers, totals, grouping, bad input."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from conftest import make_class_folders, write_runs_store
from run_log_fixtures import (
    CATALOG,
    HEADER,
    MNV2,
    VGG,
    M,
    fit_record,
    head_meta,
    known_store,
    recipe_of,
)

from featstore.report.build import build_report
from featstore.report.html import render_html
from featstore.report.markdown import render_markdown
from featstore.report.rows import recipe_figures


def _by_id(report):
    return {r.head_id or r.run_id: r for r in report.rows}


def test_rows_grouped_by_dataset_best_first(tmp_path):
    report = build_report(known_store(tmp_path / "s"))
    assert report.skipped == []
    assert [r.head_id or r.run_id for r in report.rows] == [
        "dense-d", "sc-1", "ex-d", "ft-1", "svm-b", "logistic-a", "knn-c", "ex-v", "ex-m3",
    ]  # fmt: skip
    assert [r.method for r in report.rows][:5] == [
        "frozen features + head", "scratch", "extract", "fine-tune", "frozen features + head",
    ]  # fmt: skip
    flowers = build_report(tmp_path / "s", dataset="flowers")
    assert {r.dataset for r in flowers.rows} == {"flowers"} and len(flowers.rows) == 6
    none = build_report(tmp_path / "s", dataset="cats")
    assert none.rows == [] and none.skipped == [
        "no run of dataset 'cats'; datasets with runs: digits, flowers"
    ]


def test_head_totals_add_the_extraction_that_produced_its_features_once(tmp_path):
    rows = _by_id(build_report(known_store(tmp_path / "s")))
    a = rows["logistic-a"]
    # the re-run that reused every row (ex-m2) did not produce the features: ex-m1 did
    assert a.depends_on == ["ex-m1"] and (a.seconds, a.total_seconds) == (2.0, 102.0)
    assert a.total_energy_kwh == pytest.approx(0.0101) and a.total_co2_kg == pytest.approx(0.00202)
    assert (a.val_accuracy, a.test_accuracy, a.test_macro_f1, a.images_per_s) == (0.85, 0.9, 0.89, 5000.0)
    assert a.params_trainable == 1281 * 3 and a.params_total == MNV2["n_params"] + 1281 * 3
    assert a.gflops_per_image == MNV2["gflops"] and a.train_accuracy is None and a.epochs is None
    b = rows["svm-b"]  # two backbones joined: each extraction counted once
    assert b.depends_on == ["ex-m1", "ex-v"] and b.total_seconds == 403.0
    assert b.total_energy_kwh == pytest.approx(0.0402) and b.total_co2_kg == pytest.approx(0.00804)
    assert b.params_trainable is None and b.params_total == MNV2["n_params"] + VGG["n_params"]
    assert b.gflops_per_image == pytest.approx(MNV2["gflops"] + VGG["gflops"])
    c = rows["knn-c"]  # fitted after a --force re-extraction
    assert c.depends_on == ["ex-m3"] and c.total_seconds == 121.0
    d = rows["dense-d"]  # extracted with --no-emissions: energy unknown, time known
    assert d.total_seconds == 14.0 and d.total_energy_kwh is None and d.total_co2_kg is None
    assert d.params_trainable == 1281 * 16 + 17 * 10
    assert d.gflops_per_image == round(MNV2["gflops"] * (96 / 224) ** 2, 3)
    ex = rows["ex-m3"]  # latest extraction that computed rows
    assert (ex.method, ex.seconds, ex.total_seconds, ex.test_accuracy) == ("extract", 120.0, 120.0, None)
    assert (ex.params_total, ex.params_trainable, ex.feature_sets) == (MNV2["n_params"], 0, [M])
    assert isinstance(ex.params_total, int) and isinstance(b.params_total, int)
    assert rows["ex-v"].params_total == VGG["n_params"]


def test_finetune_and_scratch_rows(tmp_path):
    rows = _by_id(build_report(known_store(tmp_path / "s")))
    ft = rows["ft-1"]
    assert (ft.method, ft.backbone, ft.head, ft.epochs) == ("fine-tune", "mobilenet_v2", "dense", 3)
    assert (ft.train_accuracy, ft.val_accuracy, ft.test_accuracy, ft.test_macro_f1) == (
        0.99,
        0.96,
        0.97,
        0.965,
    )
    assert (ft.params_total, ft.params_trainable, ft.gflops_per_image) == (2261827, 1865283, MNV2["gflops"])
    assert (ft.total_seconds, ft.total_energy_kwh, ft.total_co2_kg) == (600.0, 0.05, 0.01)
    assert ft.emissions_estimated is True and ft.folder == str(tmp_path / "s" / "finetune" / "ft-1")
    sc = rows["sc-1"]
    assert (sc.method, sc.backbone, sc.gflops_per_image, sc.params_total) == ("scratch", None, None, 1000)


def test_backbone_figures_from_the_recipe():
    assert recipe_figures(recipe_of("mobilenet_v2")) == (MNV2["n_params"], MNV2["gflops"])
    assert recipe_figures(recipe_of("vgg16-160px-random", pooling="max")) == (
        VGG["n_params"],
        round(VGG["gflops"] * (160 / 224) ** 2, 3),
    )
    assert recipe_figures(recipe_of("mobilenet-random"))[0] == CATALOG["mobilenet"]["n_params"]
    assert recipe_figures(recipe_of("vgg16", layer="block4_pool")) == (None, None)
    assert recipe_figures(recipe_of("vgg16", kind="onnx", name="tiny")) == (None, None)
    assert recipe_figures(None) == recipe_figures({"kind": "gone"}) == (None, None)


def test_old_extract_records_get_the_recipe_of_the_feature_set_file(tmp_path, tiny_onnx):
    """A run log written before extract records carried the recipe: the feature set's file has
    it, and a bf16 set's figures are its backbone's (they once went missing)."""
    import json

    from conftest import make_class_folders, via_store

    extract = via_store("extract")
    store = tmp_path / "s"
    extract(
        make_class_folders(tmp_path / "photos"), "mobilenet_v2", store=store, weights="none", input_size=32
    )
    log = store / "runs.jsonl"
    runs = [json.loads(line) for line in log.read_text().splitlines()]
    for run in runs:
        run.pop("recipe")
    log.write_text("".join(json.dumps(r) + "\n" for r in runs))
    rows = build_report(store).rows
    assert rows[0].params_total == MNV2["n_params"]
    assert rows[0].gflops_per_image == round(MNV2["gflops"] * (32 / 224) ** 2, 3)


def test_markdown_tables_per_dataset(tmp_path):
    report = build_report(known_store(tmp_path / "s"))
    text = render_markdown(report)
    assert render_html(report).startswith("<!doctype html>")
    lines = text.splitlines()
    assert lines[0] == "# featstore report" and lines.count(HEADER) == 2
    assert lines.index("## digits") < lines.index("## flowers")
    p = f"{(MNV2['n_params'] + 3843) / 1e6:.2f} M"
    assert (
        f"| frozen features + head | mobilenet_v2 | logistic | - | - | 85.0% | 90.0% | 0.890 | - | - | - | 102 | 5,000 | {p} "
        f"| 3,843 | {MNV2['gflops']:.3g} | 0.0101 | 0.00202 | logistic-a |"
    ) in lines
    ft = next(line for line in lines if line.endswith("| ft-1 |"))
    assert "| 99.0% | 96.0% | 97.0% | 0.965 | - | - | - | 600 | 50 |" in ft and "| ~0.05 | ~0.01 |" in ft


def test_empty_store(tmp_path):
    report = build_report(tmp_path / "nothing")
    assert report.rows == [] and report.skipped == []
    assert "No runs to compare" in render_markdown(report)
    page = render_html(report)
    assert "No runs to compare" in page and "<img" not in page


def test_truncated_last_line_and_deleted_head_are_skipped_with_a_reason(tmp_path):
    root = known_store(tmp_path / "s")
    with open(root / "runs.jsonl", "a") as f:
        f.write('{"id": "fit-head-killed", "command": "fit-he')
    shutil.rmtree(root / "heads" / "svm-b")
    report = build_report(root)
    assert report.skipped == [
        f"{root / 'runs.jsonl'}: 1 line(s) could not be read (a run killed while writing?)",
        f"fit-head run fit-b: head svm-b is no longer in {root / 'heads'}; left out",
    ]
    assert "svm-b" not in _by_id(report) and len(report.rows) == 8
    assert "head svm-b is no longer in" in render_html(report)


def test_head_without_logged_extraction_counts_the_fit_only(tmp_path):
    root = write_runs_store(
        tmp_path / "s",
        [fit_record("fit-a", "logistic-a", [M], 2.0, 0.001, 0.0002)],
        {"logistic-a": head_meta("logistic", [M], [1280], 0.85, 0.9, 0.89)},
    )
    report = build_report(root)
    assert report.skipped == [
        f"head logistic-a: no extract run of {M} in the run log; its totals count the fit only"
    ]
    assert (report.rows[0].total_seconds, report.rows[0].total_energy_kwh) == (2.0, 0.001)


def test_real_store_extract_and_heads(tmp_path, tiny_onnx):
    from conftest import via_store

    extract = via_store("extract")
    from conftest import via_store

    fit_head = via_store("fit_head")
    from featstore.options import JobOptions
    from featstore.store.head_files import read_meta
    from featstore.store.layout import resolve_store
    from featstore.store.runlog import read_runs

    store = tmp_path / "store"
    photos = make_class_folders(tmp_path / "pets", ("cat", "dog", "owl"), n_per_class=10)
    job = JobOptions(store=str(store), emissions=False)
    first = extract(str(photos), str(tiny_onnx), job=job)
    extract(str(photos), str(tiny_onnx), job=job)  # reuses every row
    heads = [fit_head(k, ["pets@tiny"], job=job)[0] for k in ("logistic", "knn")]
    report = build_report(store)
    assert report.skipped == [] and [r.method for r in report.rows][-1] == "extract"
    (ex,) = [r for r in report.rows if r.method == "extract"]
    assert ex.run_id == first.run_id and ex.seconds == first.seconds and ex.params_total is None
    assert [r.head_id for r in report.rows[:2]] == [
        h.head_id for h in sorted(heads, key=lambda h: -h.metrics["test"]["accuracy"])
    ]
    layout = resolve_store(store)
    runs = {r["id"]: r for r in read_runs(layout)[0]}
    for row in report.rows[:2]:
        meta = read_meta(layout, row.head_id)
        assert row.test_accuracy == meta["metrics"]["test"]["accuracy"]
        assert row.val_accuracy == meta["metrics"]["val"]["accuracy"]
        assert row.test_macro_f1 == meta["metrics"]["test"]["macro_f1"]
        assert row.depends_on == [first.run_id] and row.backbone == "tiny" and row.dataset == "pets"
        assert row.total_seconds == pytest.approx(runs[row.run_id]["seconds"] + first.seconds)
        assert row.total_energy_kwh is None and row.gflops_per_image is None
    assert _by_id(report)[heads[0].head_id].params_trainable == 9 * 3  # 8 features + bias, 3 classes
    page = render_html(report)
    images = re.findall(r'<img class="(\w+)" alt="[^"]*" src="data:image/png;base64,', page)
    assert sorted(images) == ["cm", "cm", "plot", "plot"]  # time and reliability; no CO2: --no-emissions
    assert "pets: no head or fine-tune run with a test accuracy and CO2; no plot" in page
    assert not re.search(r'(?:src|href)="(?!data:|#|file:)', page)
    json.dumps([r.to_dict() for r in report.rows])


def _evaluate(rid, head_id, sets, accuracy, f1, seconds=0.5):
    return {
        "id": rid,
        "command": "evaluate",
        "head_id": head_id,
        "kind": head_id.split("-")[0],
        "dataset": sets[0].split("@")[0],
        "feature_sets": sets,
        "metrics": {"accuracy": accuracy, "macro_f1": f1, "n": 200},
        "counts": {"n_rows": 200, "n_skipped": 0},
        "seconds": seconds,
        "images_per_s": 4000.0,
        "time": "2026-01-02T00:00:00+0000",
    }


NOTE = "no test split: val (30 images) is the held-out test set; validation (9 images, 10 % of train) carved from train"


def test_evaluate_runs_are_rows_of_the_evaluated_dataset(tmp_path):
    root = known_store(tmp_path / "s")
    holdout = "holdout@mobilenet_v2"
    with open(root / "runs.jsonl", "a") as f:
        f.write(json.dumps(_evaluate("ev-1", "logistic-a", [holdout], 0.75, 0.74)) + "\n")
        f.write(json.dumps(_evaluate("ev-2", "logistic-a", [M], 0.96, 0.94)) + "\n")
        f.write(json.dumps(_evaluate("ev-3", "gone-x", [M], 0.5, 0.5)) + "\n")
    report = build_report(root)
    assert report.skipped == [f"evaluate run ev-3: head gone-x is no longer in {root / 'heads'}; left out"]
    rows = {r.run_id: r for r in report.rows}
    ev = rows["ev-1"]
    assert (ev.dataset, ev.method, ev.backbone, ev.head, ev.head_id) == (
        "holdout",
        "evaluate",
        "mobilenet_v2",
        "logistic",
        "logistic-a",
    )
    assert (ev.test_accuracy, ev.test_macro_f1, ev.seconds, ev.total_seconds) == (0.75, 0.74, 0.5, 0.5)
    assert (ev.train_accuracy, ev.val_accuracy, ev.params_trainable, ev.total_energy_kwh) == (
        None,
        None,
        0,
        None,
    )
    assert ev.params_total == MNV2["n_params"] + 1281 * 3 and ev.feature_sets == [holdout]
    assert [r.run_id for r in build_report(root, dataset="holdout").rows] == ["ev-1"]
    flowers = [r.run_id for r in report.rows if r.dataset == "flowers"]
    assert flowers[:3] == ["ft-1", "ev-2", "fit-b"]  # 97 %, 96 %, 95 %: best first
    text = render_markdown(report)
    assert "An `evaluate` row is a saved head" in text and "## holdout" in text
    assert (
        f"| evaluate | mobilenet_v2 | logistic | - | - | - | 75.0% | 0.740 | - | - | - | 0.5 | 4,000 | "
        f"{(MNV2['n_params'] + 3843) / 1e6:.2f} M | 0 | {MNV2['gflops']:.3g} | - | - | logistic-a |"
    ) in text.splitlines()
    page = render_html(report)
    assert "An evaluate row is a saved head" in page and "evaluate run ev-1" not in page
    assert json.loads(json.dumps(ev.to_dict()))["method"] == "evaluate"


def test_split_notes_under_each_table(tmp_path):
    root = known_store(tmp_path / "s")
    meta = json.loads((root / "heads" / "logistic-a" / "meta.json").read_text())
    meta["split"] = {"source": "stored", "note": NOTE, "n_train": 81, "n_val": 9, "n_test": 30}
    (root / "heads" / "logistic-a" / "meta.json").write_text(json.dumps(meta))
    runs = [json.loads(line) for line in (root / "runs.jsonl").read_text().splitlines()]
    for run in runs:
        if run["id"] == "sc-1":
            run["split"] = {"source": "stored", "note": NOTE}
    (root / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in runs))
    report = build_report(root)
    rows = _by_id(report)
    assert (rows["logistic-a"].split, rows["logistic-a"].split_note) == ("stored", NOTE)
    assert (rows["sc-1"].split_note, rows["svm-b"].split_note, rows["ft-1"].split) == (NOTE, None, None)
    lines = render_markdown(report).splitlines()
    digits_end = lines.index("## flowers") - 2
    assert lines[digits_end] == f"Split: {NOTE} (sc-1)"
    assert f"Split: {NOTE} (logistic-a)" in lines and lines.count(f"Split: {NOTE} (logistic-a)") == 1
    assert f'<p class="note split">Split: {NOTE} (logistic-a)</p>' in render_html(report)
    only = build_report(root, dataset="digits")
    only.rows[:] = [r for r in only.rows if r.run_id in ("sc-1", "ex-d")]
    assert f"Split: {NOTE}" in render_markdown(only).splitlines()  # every run of the table: no ids


#: Lines as an older featstore wrote them: keys the typed records do not declare (kept, unused),
#: keys missing, nulls where a dict is expected, and a split described by `counts`.
OLD_LINES = [
    '{"time": "2025-06-01T10:00:00+0000", "featstore_version": "0.0.9", "id": "extract-old", '
    '"command": "extract", "data": "/photos", "backbone": "mobilenet_v2", '
    '"feature_set": "old@mobilenet_v2", "counts": null, "n_images": 40, "seconds": 12.5, '
    '"images_per_s": 3.2, "energy_kwh": 0.001, "co2_kg": 0.0004, "emissions": null}',
    '{"time": "2025-06-01T10:01:00+0000", "id": "fit-old", "command": "fit-head", '
    '"head_id": "logistic-old", "kind": "logistic", "feature_sets": ["old@mobilenet_v2"], '
    '"seconds": 1.5, "energy_kwh": null, "co2_kg": null, "sweep": {"C": [0.1, 1.0]}}',
    '{"time": "2025-06-01T10:05:00+0000", "id": "finetune-old", "command": "finetune", '
    '"method": "fine-tune", "dataset": "old", "backbone": "mobilenet_v2", "head": "dense", '
    '"metrics": {"test": {"accuracy": 0.8}}, "history": {"loss": [1.0, 0.5]}, '
    '"counts": {"source": "stratified"}, "config": {"lr": 0.001}, "seconds": 30}',
]


def test_log_lines_written_the_old_way_still_read(tmp_path):
    root = write_runs_store(
        tmp_path / "s",
        [],
        {"logistic-old": head_meta("logistic", ["old@mobilenet_v2"], [1280], 0.7, 0.75, 0.7)},
    )
    (root / "runs.jsonl").write_text("".join(line + "\n" for line in OLD_LINES))
    report = build_report(root)
    assert report.skipped == []
    rows = _by_id(report)
    assert list(rows) == ["finetune-old", "logistic-old", "extract-old"]
    ex = rows["extract-old"]
    assert (ex.dataset, ex.seconds, ex.total_seconds, ex.images_per_s) == ("old", 12.5, 12.5, 3.2)
    # no recipe in the line and no feature set file to read it from: no figures, never a guess
    # from the backbone's name (a user's file may be called vgg16.onnx)
    assert (ex.emissions_estimated, ex.params_total, ex.time) == (None, None, "2025-06-01T10:00:00+0000")
    head = rows["logistic-old"]
    assert head.depends_on == ["extract-old"] and head.total_seconds == 14.0
    assert (head.energy_kwh, head.total_energy_kwh, head.params_trainable) == (None, None, 1281 * 3)
    ft = rows["finetune-old"]
    assert (ft.epochs, ft.test_accuracy, ft.params_total, ft.gflops_per_image) == (2, 0.8, None, None)
    assert (ft.split, ft.split_note, ft.folder) == (
        "stratified",
        None,
        str(root / "finetune" / "finetune-old"),
    )
    assert report.histories == {"finetune-old": {"loss": [1.0, 0.5]}}
    assert "| fine-tune | mobilenet_v2 | dense | 2 | - | - | 80.0% | - | - | - | - | 30 |" in render_markdown(
        report
    )
