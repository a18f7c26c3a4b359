"""`featstore finetune` through Typer's test runner: a run and its output, resume refusals, and
every bad input refused with one line before any long work, nothing stored."""

from __future__ import annotations

import json
import re

import pytest
from conftest import copy_store, make_class_folders, write_image
from typer.testing import CliRunner

from featstore.errors import StoreError
from featstore.finetune.prepare import check_disk_space, new_run_id
from featstore_cli.app import app

runner = CliRunner()


def _finetune(*args: str):
    return runner.invoke(app, ["finetune", *args, "--no-emissions", "--quiet"])


def test_run_prints_the_summary_and_json(finetune_data, tmp_path):
    store = str(tmp_path / "store")
    args = ["--backbone", "lenet", "--data", str(finetune_data), "--store", store, "--epochs", "1"]
    out = _finetune(*args, "--name", "pets-lenet", "--class-weights", "--label-smoothing", "0.1")
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    assert lines[0].startswith(
        "pets-lenet: scratch lenet-32px on pets (24 images, 3 classes, 32 px), 1 epochs"
    )
    assert lines[1].split() == ["split", "images", "accuracy", "macro_f1", "log_loss"]
    assert lines[-1].endswith("extract with --backbone finetune:pets-lenet")
    again = _finetune(*args, "--name", "pets-lenet")
    assert again.exit_code == 1
    assert (
        "Error: fine-tune run pets-lenet exists already; choose another --name, or --resume pets-lenet"
        in (again.stderr)
    )
    done = _finetune("--resume", "pets-lenet", "--store", store)
    assert done.exit_code == 1 and "pets-lenet is finished already" in done.stderr
    meta = json.loads((tmp_path / "store" / "finetune" / "pets-lenet" / "meta.json").read_text())
    assert meta["config"]["class_weights"] and meta["config"]["label_smoothing"] == 0.1
    assert meta["n_features"] == 84 and meta["backbone_label"] == "lenet-32px"
    assert re.fullmatch(r"pets-lenet-32px-\d{8}-\d{6}-[0-9a-f]{4}", new_run_id("pets", "lenet-32px"))


def _no_runs(store) -> bool:
    folder = store / "finetune"
    return not folder.exists() or not [p for p in folder.iterdir() if p.is_dir()]


def test_bad_data_is_refused_before_training(tmp_path):
    store = tmp_path / "store"
    few = make_class_folders(tmp_path / "few", n_per_class=2)
    empty = make_class_folders(tmp_path / "empty", n_per_class=4)
    (empty / "fox").mkdir()
    flat = tmp_path / "flat"
    for i in range(4):
        write_image(flat / f"{i}.jpg", i)
    one = make_class_folders(tmp_path / "one", classes=("cat",), n_per_class=4)
    cases = {
        few: "class 'cat' has 2 image(s); a stratified split needs at least 3 per class",
        empty: f"class 'fox' of {empty} has no images; add images to it or remove its folder",
        flat: f"{flat} has no classes: finetune needs labelled images",
        one: f"{one} has one class ('cat'); a classifier needs at least 2",
        tmp_path / "missing": "does not exist",
    }
    for data, message in cases.items():
        out = _finetune("--backbone", "simple-cnn", "--data", str(data), "--store", str(store))
        assert out.exit_code == 1 and out.stderr.startswith("Error: ") and message in out.stderr, out.stderr
    out = _finetune(
        "--backbone",
        "simple-cnn",
        "--data",
        str(few),
        "--store",
        str(store),
        "--test-size",
        "0",
        "--val-size",
        "0",
    )
    assert out.exit_code == 1 and "the validation split is empty" in out.stderr
    assert _no_runs(store)


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--backbone", "simple-cnn", "--input-size", "4"],
            "--input-size: simple-cnn needs an input of at least 8 px with depth 3, not 4",
        ),
        (["--backbone", "lenet", "--input-size", "8"], "lenet needs an input of at least 16 px, not 8"),
        (
            ["--backbone", "mobilenet_v2", "--weights", "none", "--input-size", "16"],
            "mobilenet_v2 needs an input of at least 32 px",
        ),
        (["--backbone", "simple-cnn", "--weights", "imagenet"], "simple-cnn has no pretrained weights"),
        (["--backbone", "mobilenet_v2"], "ImageNet weights for mobilenet_v2 are not cached"),
        (["--backbone", "nonet"], "unknown backbone 'nonet'; valid names: vgg16"),
        (
            ["--backbone", "simple-cnn", "--unfreeze", "lots"],
            "--unfreeze: must be all, a number of top layers",
        ),
        (["--backbone", "simple-cnn", "--augment", "flip,blur"], "unknown augmentation 'blur'"),
        (["--backbone", "simple-cnn", "--epochs", "0"], "--epochs: must be at least 1, not 0"),
        (["--backbone", "simple-cnn", "--dropout", "1"], "--dropout: must be in [0, 1), not 1.0"),
        (["--backbone", "simple-cnn", "--resize", "fit"], "--resize: must be one of squash, crop, pad"),
        (["--backbone", "simple-cnn", "--name", "../up"], "run id '../up' must start with a letter or digit"),
        (["--backbone", "finetune:nope"], "no fine-tune run 'nope'"),
        (
            ["--backbone", "simple-cnn", "--device", "tensorrt"],
            "--device: must be one of auto, cpu, cuda for finetune",
        ),
        (["--resume", "nope"], "no fine-tune run 'nope'"),
        ([], "--backbone: missing: a new run needs a backbone and data (or resume a run)"),
    ],
)
def test_bad_options_are_refused(args, message, finetune_data, tmp_path, keras_home, tiny_onnx):
    store = tmp_path / "store"
    data = [] if "--resume" in args or not args else ["--data", str(finetune_data)]
    out = _finetune(*args, *data, "--store", str(store))
    assert out.exit_code == 1, out.output
    assert out.stderr.startswith("Error: ") and message in out.stderr, out.stderr
    assert _no_runs(store)


def test_onnx_files_cannot_be_trained(finetune_data, tmp_path, tiny_onnx):
    out = _finetune(
        "--backbone", str(tiny_onnx), "--data", str(finetune_data), "--store", str(tmp_path / "s")
    )
    assert out.exit_code == 1 and "is an ONNX file, which TensorFlow cannot train" in out.stderr


def test_unfreeze_larger_than_the_network(scratch_run, finetune_data, tmp_path):
    store = copy_store(scratch_run[0], tmp_path / "store")
    out = _finetune(
        "--backbone",
        "finetune:pets-cnn",
        "--data",
        str(finetune_data),
        "--store",
        str(store),
        "--unfreeze",
        "100",
    )
    assert out.exit_code == 1
    assert (
        "--unfreeze: 100 is more than the 6 layers of finetune-pets-cnn; pass all, a fraction such as 0.3"
        in (out.stderr)
    )
    assert sorted(p.name for p in (store / "finetune").iterdir() if p.is_dir()) == ["pets-cnn"]
    out = _finetune(
        "--backbone",
        "finetune:pets-cnn",
        "--data",
        str(finetune_data),
        "--store",
        str(store),
        "--input-size",
        "64",
    )
    assert out.exit_code == 1 and "finetune:pets-cnn takes 32 px images" in out.stderr


def test_gpu_asked_for_without_one_is_an_error(finetune_data, tmp_path):
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU")
    out = _finetune(
        "--backbone",
        "simple-cnn",
        "--data",
        str(finetune_data),
        "--store",
        str(tmp_path / "s"),
        "--device",
        "cuda",
    )
    assert out.exit_code == 1
    assert "Error: --device cuda asked for, but TensorFlow sees no GPU" in out.stderr
    assert _no_runs(tmp_path / "s")


def test_disk_space_is_checked_before_decoding(tmp_path):
    import shutil

    free = shutil.disk_usage(tmp_path).free
    check_disk_space(tmp_path / "store" / "finetune", 1, "a run")
    with pytest.raises(StoreError, match=r"not enough disk space in .* for a run: needs about .* MB free"):
        check_disk_space(tmp_path / "store" / "finetune", free + 10**12, "a run")


def test_train_and_val_folders_and_the_split_option(tmp_path):
    data = tmp_path / "pets"
    make_class_folders(data / "train", ("cat", "dog", "eel"), n_per_class=8)
    make_class_folders(data / "Valid", ("cat", "dog", "eel"), n_per_class=3, seed=1)
    store = tmp_path / "store"
    base = ["finetune", "--backbone", "lenet", "--data", str(data), "--store", str(store), "--epochs", "1"]
    out = runner.invoke(app, [*base, "--name", "tv", "--no-emissions", "--json"])
    assert out.exit_code == 0, out.output
    note = (
        "no test split: val (9 images) is the held-out test set; "
        "validation (3 images, 10 % of train) carved from train"
    )
    assert note in out.stderr.splitlines()
    result = json.loads(out.stdout)
    assert result["split"]["note"] == note and result["split"]["source"] == "stored"
    assert (result["metrics"]["test"]["n"], result["metrics"]["val"]["n"]) == (9, 3)
    meta = json.loads((store / "finetune" / "tv" / "meta.json").read_text())
    assert meta["split"]["note"] == note and meta["config"]["split"] == "auto"
    assert f"- Split note: {note}" in (store / "finetune" / "tv" / "card.md").read_text()
    (record,) = [json.loads(x) for x in (store / "runs.jsonl").read_text().splitlines()]
    assert record["split"]["note"] == note and record["counts"]["n_test"] == 9
    report = runner.invoke(app, ["report", "--store", str(store)])
    assert f"Split: {note}" in report.stdout.splitlines()
    hashed = _finetune(*base[1:], "--name", "th", "--split", "hash", "--val-size", "0.3")
    assert hashed.exit_code == 0, hashed.output
    meta = json.loads((store / "finetune" / "th" / "meta.json").read_text())
    assert meta["split"]["source"] == "hash" and meta["split"]["note"] == ""
    assert sum(meta["split"][f"n_{p}"] for p in ("train", "val", "test")) == 33


def test_split_errors_are_refused_with_one_line(tmp_path, finetune_data):
    store = tmp_path / "store"
    vt = tmp_path / "vt"
    make_class_folders(vt / "val", n_per_class=3)
    make_class_folders(vt / "test", n_per_class=3, seed=1)
    tiny = make_class_folders(tmp_path / "tiny", ("cat", "dog", "eel"), n_per_class=1)
    cases = [
        (
            finetune_data,
            ["--split", "random"],
            "Error: --split: must be one of stored, stratified, hash, not 'random'",
        ),
        (finetune_data, ["--split", "stored"], "Error: --split stored: these images have no stored split"),
        (vt, [], "Error: the stored split has no train part, only val (6 images) and test (6 images)"),
        (tiny, ["--split", "hash"], "Error: class "),  # found once the images are read
    ]
    for data, args, message in cases:
        out = _finetune("--backbone", "lenet", "--data", str(data), "--store", str(store), *args)
        assert out.exit_code == 1 and out.stderr.startswith(message), out.stderr
        assert len(out.stderr.strip().splitlines()) == 1
    assert _no_runs(store)


def test_a_claimed_run_name_is_refused_with_one_line(finetune_data, tmp_path):
    from featstore.files import claim
    from featstore.store.layout import resolve_store

    store = tmp_path / "store"
    folder = resolve_store(store).finetune / "same"
    with claim(folder, StoreError, "taken"):  # another process starting a run of that name
        out = _finetune(
            "--backbone", "lenet", "--data", str(finetune_data), "--store", str(store), "--name", "same"
        )
    assert out.exit_code == 1, out.output
    assert out.stderr == "Error: fine-tune run same exists already; choose another --name, or --resume same\n"
    assert _no_runs(store)


def test_two_runs_of_one_name_started_together_give_one_run(finetune_data, tmp_path):
    import subprocess
    import sys

    store = tmp_path / "store"
    args = ["--backbone", "lenet", "--data", str(finetune_data), "--store", str(store), "--epochs", "1"]
    cmd = [
        sys.executable,
        "-m",
        "featstore_cli",
        "finetune",
        *args,
        "--name",
        "same",
        "--no-emissions",
        "--quiet",
    ]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    outs = [(out, err, p.returncode) for p in procs for out, err in [p.communicate(timeout=300)]]
    assert sorted(rc for _, _, rc in outs) == [0, 1], outs
    (failed,) = [err for _, err, rc in outs if rc == 1]
    assert failed == "Error: fine-tune run same exists already; choose another --name, or --resume same\n"
    assert [p.name for p in (store / "finetune").iterdir() if p.is_dir()] == ["same"]
    runs = [json.loads(line) for line in (store / "runs.jsonl").read_text().splitlines()]
    assert [r["id"] for r in runs] == ["same"]
    assert json.loads((store / "finetune" / "same" / "meta.json").read_text())["status"] == "done"
