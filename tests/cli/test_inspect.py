"""`featstore inspect duplicates|leaks|labels|map` through Typer's test runner."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import blobs, write_synthetic_set
from typer.testing import CliRunner

from featstore_cli.inspect import app

runner = CliRunner()
CLASSES = ["ant", "bee", "cow"]


@pytest.fixture
def store(tmp_path):
    """bugs@tiny: 60 blobs, stored split (per class 14 train, 6 test); rows 10/11 one file, test
    row 16 a near copy of train row 2, row 25 labelled cow among the bees. other@big: another
    backbone. unl@tiny: no labels."""
    root = tmp_path / "s"
    X, y = blobs(20, 3, 12)
    y = y.copy()
    y[25] = 2
    X[16] = X[2] * 1.00001
    digests = [f"{i:064x}" for i in range(60)]
    digests[11], X[11] = digests[10], X[10]
    split = (["train"] * 14 + ["test"] * 6) * 3
    write_synthetic_set(root, "bugs@tiny", X, y, CLASSES, split=split, digests=digests)
    write_synthetic_set(root, "other@big", X, y, CLASSES, backbone_digest="c" * 64)
    write_synthetic_set(root, "unl@tiny", X, [-1] * 60, CLASSES)
    return str(root)


def _run(*args: str, ok: bool = True):
    out = runner.invoke(app, [*args, "--no-emissions", "-q"] if args[0] not in ("--help",) else list(args))
    if ok:
        assert out.exit_code == 0, out.output
    return out


def test_duplicates_table_json_and_csv(store):
    out = _run("duplicates", "--features", "bugs@tiny", "--store", store, "--threshold", "0.9999")
    lines = out.stdout.splitlines()
    assert lines[0].split() == [
        "cluster",
        "kind",
        "n_images",
        "similarity",
        "label",
        "part",
        "path",
        "nearest",
    ]
    assert lines[2].split() == ["1", "exact", "2", "1", "ant", "train", "ant/10.jpg", "ant/11.jpg"]
    assert lines[-1].startswith(
        "60 images: 1 group(s) of identical files, 1 near-duplicate cluster(s) (2 images) at cosine >= 0.9999; saved "
    )
    doc = json.loads(
        _run("duplicates", "-f", "bugs@tiny", "--store", store, "--threshold", "0.9999", "--json").stdout
    )
    assert doc["check"] == "duplicates" and doc["summary"]["n_exact_groups"] == 1 and len(doc["items"]) == 4
    assert {"digest", "exact"} <= set(doc["items"][0]) and len(doc["groups"]) == 2
    csv_out = _run(
        "duplicates", "-f", "bugs@tiny", "--store", store, "--threshold", "0.9999", "--csv", "--limit", "2"
    )
    assert csv_out.stdout.splitlines() == [
        "cluster,kind,n_images,similarity,label,part,path,nearest",
        "1,exact,2,1.0,ant,train,ant/10.jpg,ant/11.jpg",
        "1,exact,2,1.0,ant,train,ant/11.jpg,ant/10.jpg",
    ]


def test_leaks_in_the_stored_split_and_against_another_set(store):
    out = _run("leaks", "-f", "bugs@tiny", "--store", store, "--threshold", "0.9999")
    lines = out.stdout.splitlines()
    assert lines[0].split() == [
        "rank", "part", "path", "label", "similarity", "other_part", "other_path", "other_label", "exact",
    ]  # fmt: skip
    assert lines[2].split() == ["1", "test", "ant/16.jpg", "ant", "1", "train", "ant/2.jpg", "ant", "no"]
    assert lines[-1].startswith(
        "near duplicates in the parts they are compared with at cosine >= 0.9999: val: 0 of 5 images (0.0 %); "
        "test: 1 of 18 images (5.6 %); saved "
    )
    bad = _run("leaks", "-f", "bugs@tiny", "--against", "other@big", "--store", store, ok=False)
    assert bad.exit_code == 1 and bad.stderr.startswith(
        "Error: other@big was made by another backbone export"
    )
    unl = _run("leaks", "-f", "unl@tiny", "--store", store, ok=False)
    assert unl.exit_code == 1 and "unl@tiny has no labels and no stored split" in unl.stderr
    doc = json.loads(
        _run("leaks", "-f", "unl@tiny", "--against", "bugs@tiny", "--store", store, "--json").stdout
    )
    assert doc["summary"]["parts"][0]["n_leaked"] == 60 and len(doc["items"]) == 50  # --limit 50
    bad_split = _run("leaks", "-f", "bugs@tiny", "--store", store, "--split", "random", ok=False)
    assert bad_split.exit_code == 1 and bad_split.stderr.startswith("Error: --split: must be one of")


def test_labels(store):
    pytest.importorskip("cleanlab")
    out = _run("labels", "-f", "bugs@tiny", "--store", store, "--limit", "1")
    lines = out.stdout.splitlines()
    assert lines[0].split() == [
        "rank",
        "label",
        "predicted",
        "p_label",
        "p_predicted",
        "quality",
        "part",
        "path",
    ]
    assert lines[2].split()[:3] == ["1", "cow", "bee"] and lines[2].split()[-1] == "cow/25.jpg"
    assert len(lines) == 4 and "likely label error(s) among 60 labelled images (logistic, 5-fold" in lines[3]
    unl = _run("labels", "-f", "unl@tiny", "--store", store, ok=False)
    assert unl.exit_code == 1 and unl.stderr.count("\n") == 1
    assert unl.stderr.startswith("Error: unl@tiny has no labels, and inspect labels needs labelled images")
    few = _run("labels", "-f", "bugs@tiny", "--store", store, "--folds", "30", ok=False)
    assert few.stderr.startswith(
        "Error: class 'bee' has 19 image(s); 30-fold cross-validation needs at least 30"
    )
    bad = _run("labels", "-f", "bugs@tiny", "--store", store, "--folds", "1", ok=False)
    assert bad.stderr.startswith("Error: --folds: must be a whole number of at least 2")
    bad_c = _run("labels", "-f", "bugs@tiny", "--store", store, "--C", "x", ok=False)
    assert bad_c.stderr.startswith("Error: --C: must be a comma-separated list of numbers")
    head = _run("labels", "-f", "bugs@tiny", "--store", store, "--head", "dense", ok=False)
    assert head.stderr.startswith("Error: --head: must be one of svm, logistic, knn")


def test_map(store, tmp_path):
    out_png = tmp_path / "map.png"
    out = _run("map", "-f", "bugs@tiny", "--store", store, "--method", "pca", "--output", str(out_png))
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["class", "n_images", "n_misclassified", "accuracy"]
    assert [line.split()[0] for line in lines[2:5]] == CLASSES
    assert lines[-1].startswith("PCA map of 60 images, ") and lines[-1].endswith(
        f"misclassified; wrote {out_png}"
    )
    assert out_png.read_bytes().startswith(b"\x89PNG")
    again = _run("map", "-f", "bugs@tiny", "--store", store, "--output", str(out_png), ok=False)
    assert (
        again.exit_code == 1 and again.stderr == f"Error: {out_png} exists; pass --overwrite to replace it\n"
    )
    unl = _run("map", "-f", "unl@tiny", "--store", store, "--method", "pca", "--json")
    doc = json.loads(unl.stdout)
    assert doc["summary"]["n_misclassified"] is None and doc["notes"] == [
        "unl@tiny has no labels: one colour, no misclassified marks"
    ]
    bad = _run("map", "-f", "bugs@tiny", "--store", store, "--method", "mds", ok=False)
    assert bad.stderr.startswith("Error: --method: must be one of auto, umap, tsne, pca")


@pytest.mark.parametrize("command", ["duplicates", "leaks", "labels", "map"])
def test_common_errors(store, command):
    unknown = _run(command, "-f", "nope@tiny", "--store", store, ok=False)
    assert unknown.exit_code == 1
    assert (
        unknown.stderr.startswith("Error: no feature set 'nope@tiny' in ")
        and "there are: bugs@tiny, other@big, unl@tiny" in unknown.stderr
    )
    both = _run(command, "-f", "bugs@tiny", "--store", store, "--json", "--csv", ok=False)
    assert both.exit_code == 2 and "choose one output format, not --json and --csv" in both.output


@pytest.mark.parametrize("value", ["0", "1.01", "-1"])
def test_threshold_outside_0_1(store, value):
    for command in ("duplicates", "leaks"):
        out = _run(command, "-f", "bugs@tiny", "--store", store, "--threshold", value, ok=False)
        assert out.exit_code == 1
        assert (
            out.stderr == f"Error: --threshold: must be a cosine similarity in (0, 1], not {float(value)}\n"
        )


def test_empty_set(tmp_path):
    root = tmp_path / "s"
    write_synthetic_set(root, "empty@tiny", np.zeros((0, 4), np.float32), np.zeros(0, int), ["a", "b"])
    for command in ("duplicates", "leaks", "labels", "map"):
        out = _run(command, "-f", "empty@tiny", "--store", str(root), ok=False)
        assert out.exit_code == 1 and "empty@tiny holds no images" in out.stderr


def test_every_command_has_help_with_an_example():
    for command in ("duplicates", "leaks", "labels", "map"):
        out = runner.invoke(app, [command, "--help"])
        assert out.exit_code == 0 and "Example: featstore inspect " + command in out.stdout
