"""`featstore finetune` on tiny real image folders: the run folder, both phases, frozen
BatchNorm, augmentation only in training, the ONNX exports, chained runs, extract with a run's
backbone, the split shared with fit-head, and the report row."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import copy_store, via_store, write_bn_keras

from featstore.backbones.options import BackboneOptions
from featstore.backbones.recipes import resolve_recipe
from featstore.data.decode import load_images
from featstore.data.scan import scan_dataset
from featstore.errors import StoreError, UnknownBackboneError
from featstore.inference.onnxruntime_runtime import open_session
from featstore.report.build import build_report
from featstore.report.html import render_html
from featstore.report.markdown import render_markdown
from featstore.store import run_files as runstore
from featstore.store.layout import resolve_store
from featstore.store.maintenance import verify_store
from featstore.store.runlog import read_runs

finetune = via_store("finetune")


def _pixels(data, size=32, n=None) -> np.ndarray:
    items = scan_dataset(data).items[:n]
    return np.stack([x.pixels for x in load_images(items, size_px=size, n_workers=1)])


def _keras(path):
    import keras

    from featstore.finetune.networks import custom_layers

    custom_layers()
    return keras.models.load_model(path, compile=False)


@pytest.fixture(scope="module")
def tuned_run(tmp_path_factory, finetune_data):
    """Fine-tuning a tiny pretrained .keras backbone with BatchNorm: 1 warm-up + 1 fine-tune epoch,
    top 3 layers unfrozen, flip and rotate augmentation. Returns (store, run id, source file)."""
    root = tmp_path_factory.mktemp("tuned")
    source = write_bn_keras(root / "tiny_bn.keras")
    store = root / "store"
    finetune(
        str(finetune_data),
        str(source),
        store=str(store),
        name="pets-bn",
        epochs=2,
        warmup_epochs=1,
        unfreeze="3",
        augment="flip,rotate",
        lr=0.05,
        fine_lr=0.05,
        emissions=False,
    )
    return store, "pets-bn", source


def test_scratch_run_writes_the_run_folder_contract(scratch_run, finetune_data):
    store, run_id = scratch_run
    layout = resolve_store(store)
    folder = runstore.run_dir(layout, run_id)
    meta = runstore.read_run_meta(layout, run_id)
    assert meta["status"] == "done" and meta["classes"] == ["cat", "dog", "eel"]
    assert (meta["input_size"], meta["resize"], meta["n_features"]) == (32, "squash", 64)
    assert set(meta["files_sha256"]) == {"classifier.onnx", "backbone.onnx", "best.keras"}
    assert meta["method"] == "scratch" and meta["backbone_label"] == "simple-cnn-32px"
    for name in ("classifier.onnx", "backbone.onnx", "best.keras"):
        assert runstore.run_file(layout, run_id, name)[0] == folder / name
    for name in ("history.json", "learning_curves.png", "metrics.json", "split.json", "card.md"):
        assert (folder / name).is_file(), name
    for part in ("val", "test"):
        assert (folder / f"confusion_{part}.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(folder.glob("ckpt-*")) and not (folder / "pixels.npy").exists()
    history = json.loads((folder / "history.json").read_text())
    assert len(history["loss"]) == len(history["val_accuracy"]) == 2 and history["phase"] == ["scratch"] * 2
    metrics = json.loads((folder / "metrics.json").read_text())
    assert set(metrics) == {"train", "val", "test"}
    assert metrics["test"]["n"] == 5 and np.asarray(metrics["test"]["confusion_matrix"]).sum() == 5
    assert {"accuracy", "macro_f1", "log_loss", "per_class"} <= set(metrics["val"])
    assert "# Model card: pets-cnn" in (folder / "card.md").read_text()
    (record,) = [r for r in read_runs(layout)[0] if r["command"] == "finetune"]
    for key in ("method", "dataset", "backbone", "head", "epochs", "metrics", "params_total"):
        assert record[key] is not None, key
    assert record["metrics"]["test"]["accuracy"] == metrics["test"]["accuracy"]
    assert record["params_trainable"] == record["params_total"] == meta["params_total"]
    assert record["energy_kwh"] is not None and record["folder"] == str(folder)
    assert all(c.ok for c in verify_store(layout))


def test_onnx_exports_equal_keras(scratch_run, finetune_data):
    store, run_id = scratch_run
    layout = resolve_store(store)
    from featstore.finetune.networks import inference_models

    classifier, backbone = inference_models(_keras(runstore.run_dir(layout, run_id) / "best.keras"))
    x = _pixels(finetune_data)
    for name, net, width in (("classifier.onnx", classifier, 3), ("backbone.onnx", backbone, 64)):
        got = open_session(runstore.run_file(layout, run_id, name)[0], "cpu").run(x)
        want = np.asarray(net(x, training=False))
        assert got.shape == (len(x), width) and got.dtype == np.float32
        assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-4
    probs = open_session(runstore.run_dir(layout, run_id) / "classifier.onnx", "cpu").run(x)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_split_is_the_split_of_fit_head(scratch_run, finetune_data, tiny_onnx, tmp_path):
    from conftest import via_store

    extract = via_store("extract")
    from conftest import via_store

    fit_head = via_store("fit_head")

    store, run_id = scratch_run
    ours = json.loads((runstore.run_dir(resolve_store(store), run_id) / "split.json").read_text())
    heads = tmp_path / "heads"
    fs = extract(str(finetune_data), str(tiny_onnx), store=str(heads), emissions=False).feature_set
    (head,) = fit_head("logistic", [fs], store=str(heads), emissions=False)
    theirs = json.loads((resolve_store(heads).heads / head.head_id / "split.json").read_text())
    assert ours == theirs


def test_two_phases_train_the_right_layers_and_batchnorm_stays_frozen(tuned_run):
    store, run_id, source = tuned_run
    meta = runstore.read_run_meta(resolve_store(store), run_id)
    head, tune = meta["phases"]
    assert (head["phase"], head["first_epoch"], head["backbone_layers_trained"]) == ("head", 1, [])
    assert head["n_trainable_params"] == 8 * 3 + 3  # the softmax layer only
    assert (tune["phase"], tune["first_epoch"], tune["backbone_layers_trained"]) == (
        "fine-tune",
        2,
        ["conv_b"],
    )
    assert tune["n_trainable_params"] == head["n_trainable_params"] + 3 * 3 * 8 * 8 + 8
    assert meta["method"] == "fine-tune" and meta["n_unfreeze"] == 3
    assert json.loads((runstore.run_dir(resolve_store(store), run_id) / "history.json").read_text())[
        "phase"
    ] == ["head", "fine-tune"]

    before = _keras(source)
    model = _keras(runstore.run_dir(resolve_store(store), run_id) / "best.keras")
    after = model.get_layer("backbone")
    weights = lambda net, name: [np.asarray(w) for w in net.get_layer(name).weights]  # noqa: E731
    inner = after.layers[2]  # pixels, preprocess, the loaded network, pool
    for name in ("scale", "conv_a", "bn_a", "bn_b"):
        for w0, w1 in zip(weights(before, name), weights(inner, name), strict=True):
            np.testing.assert_array_equal(w0, w1)  # frozen, moving statistics included
    changed = [
        not np.array_equal(a, b)
        for a, b in zip(weights(before, "conv_b"), weights(inner, "conv_b"), strict=True)
    ]
    assert meta["best_epoch"] == 1 or all(changed)
    assert not inner.get_layer("bn_a").trainable and not inner.get_layer("bn_b").trainable


def test_augmentation_is_off_at_inference(tuned_run, finetune_data):
    from featstore.finetune.networks import custom_layers, inference_models

    store, run_id, _ = tuned_run
    model = _keras(runstore.run_dir(resolve_store(store), run_id) / "best.keras")
    augment = model.get_layer("augment")
    assert augment.ops == ["flip", "rotate"]
    x = _pixels(finetune_data, n=6)
    np.testing.assert_array_equal(np.asarray(augment(x, training=False)), x)
    moved = np.asarray(augment(x, training=True))
    assert moved.dtype == np.uint8 and moved.shape == x.shape and (moved != x).any()
    classifier, _ = inference_models(model)
    assert "augment" not in [layer.name for layer in classifier.layers]
    np.testing.assert_allclose(
        np.asarray(model(x, training=False)), np.asarray(classifier(x, training=False)), rtol=1e-6
    )
    pa = custom_layers()["PixelAugment"](["contrast", "zoom", "translate"], seed=3)
    np.testing.assert_array_equal(np.asarray(pa(x, training=False)), x)


def test_chained_run_starts_from_the_earlier_network(scratch_run, finetune_data, tmp_path):
    store = copy_store(scratch_run[0], tmp_path / "store")
    r = finetune(
        str(finetune_data), "finetune:pets-cnn", store=str(store), name="again", epochs=1, warmup_epochs=1
    )
    assert (r.method, r.backbone, r.input_size, r.n_features) == ("fine-tune", "finetune-pets-cnn", 32, 64)
    layout = resolve_store(store)
    parent = _keras(runstore.run_dir(layout, "pets-cnn") / "best.keras").get_layer("backbone")
    child = _keras(runstore.run_dir(layout, "again") / "best.keras").get_layer("backbone")
    for a, b in zip(parent.weights, child.weights, strict=True):  # warm-up only: backbone frozen
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert runstore.read_run_meta(layout, "again")["parent_run"] == "pets-cnn"


def test_extract_with_a_run_backbone(scratch_run, finetune_data, tmp_path):
    from conftest import via_store

    extract = via_store("extract")
    from featstore.store.shards import open_feature_set

    store = copy_store(scratch_run[0], tmp_path / "store")
    first = extract(str(finetune_data), "finetune:pets-cnn", store=str(store), emissions=False)
    assert first.feature_set == "pets@finetune-pets-cnn" and first.n_computed == 24
    assert (first.n_features, first.input_size) == (64, 32)
    again = extract(str(finetune_data), "finetune:pets-cnn", store=str(store), emissions=False)
    assert again.n_computed == 0 and again.n_reused == 24
    layout = resolve_store(store)
    backbone = _keras(runstore.run_dir(layout, "pets-cnn") / "best.keras").get_layer("backbone")
    with open_feature_set(layout, first.feature_set) as r:
        stored = r.read_features()
    want = np.asarray(backbone(_pixels(finetune_data), training=False))
    assert np.linalg.norm(stored - want) / np.linalg.norm(want) < 1e-4
    assert all(c.ok for c in verify_store(layout))


def test_run_references_are_checked(scratch_run, tmp_path):
    store = copy_store(scratch_run[0], tmp_path / "store")
    layout = resolve_store(store)
    recipe = resolve_recipe(BackboneOptions("finetune:pets-cnn"), layout=layout)
    assert (recipe.kind, recipe.label, recipe.input_size) == ("finetune", "finetune-pets-cnn", 32)
    with pytest.raises(runstore.UnknownRunError, match="some runs: pets-cnn"):
        resolve_recipe(BackboneOptions("finetune:nope"), layout=layout)
    with pytest.raises(UnknownBackboneError, match="takes 32 px images"):
        resolve_recipe(BackboneOptions("finetune:pets-cnn", input_size=64), layout=layout)
    with pytest.raises(UnknownBackboneError, match="--layer and --pooling max do not apply"):
        resolve_recipe(BackboneOptions("finetune:pets-cnn", pooling="max"), layout=layout)
    (runstore.run_dir(layout, "pets-cnn") / "backbone.onnx").write_bytes(b"changed")
    with pytest.raises(StoreError, match="changed since the run wrote it"):
        resolve_recipe(BackboneOptions("finetune:pets-cnn"), layout=layout)
    assert [c.problems for c in verify_store(layout) if not c.ok] == [
        ["backbone.onnx does not match its recorded sha256"]
    ]


def test_report_shows_the_finetune_row(scratch_run):
    store, run_id = scratch_run
    report = build_report(store)
    (row,) = [r for r in report.rows if r.run_id == run_id]
    meta = runstore.read_run_meta(resolve_store(store), run_id)
    assert (row.method, row.dataset, row.backbone, row.head, row.epochs) == (
        "scratch",
        "pets",
        "simple-cnn-32px",
        "dense-128",
        2,
    )
    assert row.test_accuracy == meta["metrics"]["test"]["accuracy"]
    assert row.params_total == meta["params_total"] and row.gflops_per_image == meta["gflops_per_image"]
    assert row.seconds > 0 and row.images_per_s > 0 and row.energy_kwh is not None
    assert "| scratch | simple-cnn-32px | dense-128 | 2 |" in render_markdown(report)
    page = render_html(report)
    assert "pets-cnn: learning curves" in page and "no learning_curves.png" not in page


def test_full_disk_while_checkpointing_is_a_clear_error(finetune_data, tmp_path):
    """A file-size limit that lets the decoded images through but not a checkpoint."""
    import subprocess
    import sys

    store = tmp_path / "store"
    code = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (200000, 200000))\n"
        "from featstore import Store\n"
        "from featstore.errors import FeatstoreError\n"
        f"try: Store({str(store)!r}).finetune({str(finetune_data)!r}, 'simple-cnn', input_size=32, "
        "epochs=2, name='full', emissions=False)\n"
        "except FeatstoreError as e: print('ERR', e); sys.exit(1)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stderr
    assert out.stdout.startswith("ERR no space left to write ") and "File too large" in out.stdout, out.stdout
    assert not list((store / "finetune").glob("*/*.keras"))
    assert all(c.ok for c in verify_store(resolve_store(store)))


def test_from_scratch_everything_trains_and_batchnorm_learns_fast(tmp_path):
    """Scratch phase: every layer trainable, BatchNorm in training mode with a short momentum."""
    import keras

    from featstore.backbones.export import build_keras_backbone
    from featstore.finetune import networks

    recipe = resolve_recipe(BackboneOptions(str(write_bn_keras(tmp_path / "bn.keras"))))
    backbone = networks.as_backbone(build_keras_backbone(recipe)[0])
    model = networks.build_classifier(
        backbone, 3, augment=[], dropout=0.1, head_units=4, frozen_bn=False, seed=0
    )
    trained = networks.set_phase(model, "scratch")
    assert trained == ["conv_a", "bn_a", "conv_b", "bn_b"]
    bns = [x for x in networks.tunable_layers(backbone) if isinstance(x, keras.layers.BatchNormalization)]
    assert all(bn.trainable and bn.momentum == networks.SCRATCH_BN_MOMENTUM for bn in bns)
    assert networks.count_params(model)[1] == networks.count_params(model)[0] - 2 * 2 * 8  # moving stats
    assert networks.set_phase(model, "head") == [] and not backbone.trainable


def test_unfreeze_counts():
    from featstore.errors import InvalidOptionError
    from featstore.finetune.options import Unfreeze

    assert [Unfreeze(t).count(154, "mobilenet_v2") for t in ("all", "30", "0.3", "1.0", "0", "154")] == [
        154,
        30,
        46,
        154,
        0,
        154,
    ]
    for bad in ("155", "-1", "1.5", "nan", "inf", "some"):
        with pytest.raises(InvalidOptionError, match="^unfreeze: "):
            Unfreeze(bad).count(154, "mobilenet_v2")
