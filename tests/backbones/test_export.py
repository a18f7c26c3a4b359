"""ONNX export of real Keras backbones (random weights, small inputs) checked against TensorFlow."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from featstore.backbones.export import (
    MAX_EXPORT_ERROR,
    build_keras_backbone,
    ensure_backbone,
    find_backbone,
)
from featstore.backbones.options import BackboneOptions
from featstore.backbones.recipes import resolve_recipe
from featstore.errors import ExportError, InvalidOptionError
from featstore.inference.onnxruntime_runtime import open_session
from featstore.store.layout import resolve_store

pytestmark = pytest.mark.slow


def recipe_of(backbone, **kw):
    return resolve_recipe(BackboneOptions(backbone, **kw))


@pytest.mark.parametrize(
    "name,mode",
    [("vgg16", "caffe"), ("densenet121", "torch"), ("efficientnet_b0", "none")],
)
def test_export_matches_tensorflow_for_every_preprocess_mode(tmp_path, name, mode):
    recipe = recipe_of(name, weights="none", input_size=32)
    assert recipe.preprocess == mode
    info = ensure_backbone(recipe, resolve_store(tmp_path))
    assert info.export_error < MAX_EXPORT_ERROR
    meta = json.loads(info.path.with_suffix(".json").read_text())
    assert meta["digest"] == recipe.digest and meta["n_features"] == info.n_features
    session = open_session(info.path, device="cpu")
    inp = session.session.get_inputs()[0]
    assert inp.type == "tensor(uint8)" and inp.shape[1:] == [32, 32, 3] and isinstance(inp.shape[0], str)


def test_export_equals_keras_preprocess_input_on_fresh_pixels(mnv2_store):
    recipe = recipe_of("mobilenet_v2", weights="none", input_size=32)
    info = find_backbone(recipe, resolve_store(mnv2_store))
    assert info is not None
    _, reference = build_keras_backbone(recipe)  # same seed: same random weights
    x = np.random.default_rng(42).integers(0, 256, (5, 32, 32, 3)).astype(np.uint8)
    got = open_session(info.path, device="cpu").run(x)
    want = reference(x)
    assert got.shape == (5, 1280)
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < MAX_EXPORT_ERROR


def test_cached_export_is_reused_and_a_changed_file_is_not(store_with_mnv2):
    layout = resolve_store(store_with_mnv2)
    recipe = recipe_of("mobilenet_v2", weights="none", input_size=32)
    info = ensure_backbone(recipe, layout)
    mtime = os.stat(info.path).st_mtime_ns
    assert ensure_backbone(recipe, layout).path == info.path
    assert os.stat(info.path).st_mtime_ns == mtime
    info.path.write_bytes(info.path.read_bytes()[:-10])
    assert find_backbone(recipe, layout) is None
    again = ensure_backbone(recipe, layout)  # re-exported, and deterministic
    assert again.onnx_sha256 == info.onnx_sha256 or again.export_error < MAX_EXPORT_ERROR
    x = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype(np.uint8)
    np.testing.assert_allclose(open_session(again.path, "cpu").run(x), open_session(again.path, "cpu").run(x))


def test_layer_and_max_pooling(tmp_path):
    recipe = recipe_of(
        "mobilenet_v2", weights="none", input_size=32, layer="block_6_expand_relu", pooling="max"
    )
    info = ensure_backbone(recipe, resolve_store(tmp_path))
    assert info.n_features == 192 and info.export_error < MAX_EXPORT_ERROR
    with pytest.raises(InvalidOptionError, match="layer: mobilenet_v2 has no layer 'nope'"):
        build_keras_backbone(recipe_of("mobilenet_v2", weights="none", input_size=32, layer="nope"))


def test_a_bad_export_is_refused(tmp_path, monkeypatch):
    import featstore.backbones.export as export

    monkeypatch.setattr(export, "MAX_EXPORT_ERROR", -1.0)
    recipe = recipe_of("mobilenet_v2", weights="none", input_size=32)
    with pytest.raises(ExportError, match="refusing it"):
        ensure_backbone(recipe, resolve_store(tmp_path))
    assert not list((tmp_path / "backbones").glob("*.onnx"))


def test_keras_file_as_backbone(tmp_path, photos):
    import keras
    from conftest import via_store

    from featstore.data.decode import decode_image

    extract = via_store("extract")

    inp = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inp)
    x = keras.layers.Conv2D(6, 3, activation="relu")(x)
    model = keras.Model(inp, keras.layers.GlobalAveragePooling2D()(x))
    model.save(tmp_path / "mine.keras")
    r = extract(str(photos), str(tmp_path / "mine.keras"), store=str(tmp_path / "s"), emissions=False)
    assert (r.feature_set, r.n_features, r.input_size) == ("photos@mine", 6, 16)
    from featstore.store.shards import open_feature_set

    with open_feature_set(resolve_store(tmp_path / "s"), "photos@mine") as fs:
        rows = fs.rows()
        feats = fs.read_features()
    px = decode_image((photos / rows.paths[0]).read_bytes(), 16)
    want = model.predict(px[None].astype("float32"), verbose=0)[0]
    np.testing.assert_allclose(feats[0], want, rtol=1e-4, atol=1e-6)


def test_count_flops_on_a_known_network():
    import keras

    from featstore.backbones.export import count_flops

    inp = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, padding="same")(inp)
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, keras.layers.Dense(4)(x))
    assert count_flops(model) == 2 * (16 * 16 * 8 * 27 + 16 * 16 * 8 * 9 + 8 * 4)


def test_catalog_figures_are_what_the_network_computes():
    from featstore.backbones.applications import load_catalog
    from featstore.backbones.catalog import compute_entry

    recorded = dict(load_catalog()["mobilenet_v2"])
    recorded.pop("weights")  # the official weight file: checked in test_backbones
    assert compute_entry("mobilenet_v2") == recorded
