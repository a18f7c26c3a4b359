"""The registry, recipes and their digests, and ImageNet weight lookup (no TensorFlow)."""

from __future__ import annotations

import hashlib
import json

import pytest
from conftest import build_tiny_onnx

from featstore.backbones.catalog import CATALOG_PATH, list_backbones
from featstore.backbones.registry import (
    BackboneOptions,
    available_backbones,
    get_backbone,
    imagenet_weights_path,
    max_input_size,
    resolve_recipe,
)
from featstore.backbones.weights import import_weights
from featstore.errors import InvalidOptionError, UnknownBackboneError, WeightsNotFoundError

SEED_TABLE = [
    "vgg16", "vgg19", "resnet50", "resnet101", "resnet152", "resnet50_v2", "resnet101_v2",
    "resnet152_v2", "inception_v3", "inception_resnet_v2", "xception", "mobilenet", "mobilenet_v2",
    "mobilenet_v3_small", "mobilenet_v3_large", "densenet121", "densenet169", "densenet201",
    "nasnet_mobile", "nasnet_large", *[f"efficientnet_b{i}" for i in range(8)],
    "efficientnet_v2_b0", "efficientnet_v2_b1", "efficientnet_v2_b2", "efficientnet_v2_b3",
    "efficientnet_v2_s", "convnext_tiny",
]  # fmt: skip


def test_registry_holds_the_seed_table():
    assert available_backbones() == SEED_TABLE


def test_names_are_forgiving_and_unknown_names_list_the_valid_ones():
    assert get_backbone("MobileNetV2").name == "mobilenet_v2"
    assert get_backbone("resnet-50").name == "resnet50"
    assert get_backbone("EfficientNetV2S").input_size == 384
    with pytest.raises(UnknownBackboneError, match="valid names: vgg16, vgg19"):
        get_backbone("alexnet")


def test_catalog_covers_every_backbone():
    rows = {r.name: r for r in list_backbones()}
    assert set(rows) == set(SEED_TABLE)
    assert all(r.n_features and r.n_params and r.gflops for r in rows.values())
    assert rows["resnet50"].n_features == 2048 and rows["inception_v3"].input_size == 299
    assert set(json.loads(CATALOG_PATH.read_text())) == set(SEED_TABLE)


def test_imagenet_missing_names_the_file_and_folder(keras_home):
    with pytest.raises(WeightsNotFoundError) as err:
        resolve_recipe("vgg16")
    msg = str(err.value)
    assert "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5" in msg
    assert str(keras_home / "models") in msg and "--weights none" in msg


def test_imagenet_cached_trusted_file_is_found_and_hashed(keras_home, tmp_path):
    spec = get_backbone("mobilenet_v2")
    pretend = tmp_path / "pretend.h5"
    pretend.write_bytes(b"pretend weights")
    import_weights(pretend, "mobilenet_v2", trust=True)
    r = resolve_recipe("mobilenet_v2")
    assert r.weights == "imagenet" and r.weights_sha256 == hashlib.sha256(b"pretend weights").hexdigest()
    assert imagenet_weights_path(spec).read_bytes() == b"pretend weights"
    rows = {b.name: b.imagenet for b in list_backbones()}
    assert r.label == "mobilenet_v2" and rows["mobilenet_v2"] == "trusted" and rows["vgg16"] == "missing"


def test_input_size_limit_follows_memory(tmp_path):
    assert max_input_size(memory=24 * 2**30) == 5016
    assert max_input_size(memory=2**50) == 5792  # 2**31 values per tensor
    with pytest.raises(UnknownBackboneError, match="too large for vgg16"):
        resolve_recipe("vgg16", weights="none", input_size=100_000)
    with pytest.raises(UnknownBackboneError, match="too large for tiny.onnx"):
        resolve_recipe(str(build_tiny_onnx(tmp_path / "tiny.onnx")), input_size=100_000)


def test_recipe_digest_and_label_follow_every_option(keras_home):
    base = resolve_recipe("vgg16", weights="none", input_size=64)
    assert base.label == "vgg16-64px-random"
    assert base.digest == resolve_recipe("vgg16", weights="none", input_size=64).digest
    others = [
        resolve_recipe("vgg16", weights="none", input_size=96),
        resolve_recipe("vgg16", weights="none", input_size=64, pooling="max"),
        resolve_recipe("vgg16", weights="none", input_size=64, layer="block4_pool"),
        resolve_recipe("vgg19", weights="none", input_size=64),
    ]
    assert len({base.digest, *(o.digest for o in others)}) == 5
    assert others[1].label == "vgg16-64px-random-max"
    assert others[2].label == "vgg16-64px-random.block4_pool"


def test_weights_path(tmp_path, keras_home):
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        resolve_recipe("vgg16", weights=str(tmp_path / "nope.h5"))
    w = tmp_path / "mine.weights.h5"
    w.write_bytes(b"x")
    r = resolve_recipe("vgg16", weights=str(w))
    assert r.label.startswith("vgg16-w") and r.weights == str(w)


def test_input_size_below_minimum():
    with pytest.raises(UnknownBackboneError, match="at least 75 px"):
        resolve_recipe("inception_v3", weights="none", input_size=32)


def test_bad_pooling_and_keywords():
    with pytest.raises(InvalidOptionError, match="pooling: must be one of avg, max, not 'sum'"):
        resolve_recipe("vgg16", weights="none", pooling="sum")
    with pytest.raises(InvalidOptionError, match="size: unknown option; valid ones: backbone, input_size"):
        resolve_recipe("vgg16", size=64)


def test_options_object_and_name_give_one_recipe():
    opts = BackboneOptions("vgg16", weights="none", input_size=64, pooling="max")
    assert resolve_recipe(opts) == resolve_recipe("vgg16", weights="none", input_size=64, pooling="max")
    assert resolve_recipe(opts, pooling="avg").pooling == "avg"


def test_onnx_file_recipe(tmp_path):
    path = build_tiny_onnx(tmp_path / "My Net.onnx", size_px=20)
    r = resolve_recipe(str(path))
    assert (r.kind, r.name, r.input_size, r.label) == ("onnx", "My_Net", 20, "My_Net")
    with pytest.raises(InvalidOptionError, match="layer: works with registry and .keras backbones"):
        resolve_recipe(str(path), layer="x")


def test_bad_model_files(tmp_path):
    with pytest.raises(UnknownBackboneError, match="does not exist"):
        resolve_recipe(str(tmp_path / "missing.onnx"))
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(UnknownBackboneError, match="not a readable ONNX model"):
        resolve_recipe(str(junk))
    bad_keras = tmp_path / "bad.keras"
    bad_keras.write_bytes(b"zip?")
    with pytest.raises(UnknownBackboneError, match="not a readable .keras model"):
        resolve_recipe(str(bad_keras))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vgg16", "mobilenet_v2", "efficientnet_b0"])
def test_catalog_weights_match_keras_own_application_code(name):
    from featstore.backbones.catalog import keras_weights_record, load_catalog

    recorded = dict(load_catalog()[name]["weights"])
    recorded.pop("size")  # not in Keras' code: taken from Keras' own download logs
    assert keras_weights_record(name) == recorded
