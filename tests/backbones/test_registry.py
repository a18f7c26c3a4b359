"""The Keras applications by name, backbone sources, recipes and their digests, and ImageNet weight
lookup (no TensorFlow)."""

from __future__ import annotations

import hashlib
import json

import pytest
from conftest import build_tiny_onnx

from featstore.backbones.applications import (
    CATALOG_PATH,
    available_backbones,
    get_backbone,
    imagenet_weights_path,
)
from featstore.backbones.catalog import list_backbones
from featstore.backbones.fetching import import_weights
from featstore.backbones.options import BackboneOptions
from featstore.backbones.recipes import available_sources, find_source, resolve_recipe, source_of
from featstore.errors import InvalidOptionError, UnknownBackboneError, WeightsNotFoundError
from featstore.inference.devices import max_input_size


def recipe(backbone, **kw):
    return resolve_recipe(BackboneOptions(backbone, **kw) if isinstance(backbone, str) else backbone)


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
        recipe("vgg16")
    msg = str(err.value)
    assert "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5" in msg
    assert str(keras_home / "models") in msg and "--weights none" in msg


def test_imagenet_cached_trusted_file_is_found_and_hashed(keras_home, tmp_path):
    spec = get_backbone("mobilenet_v2")
    pretend = tmp_path / "pretend.h5"
    pretend.write_bytes(b"pretend weights")
    import_weights(pretend, "mobilenet_v2", trust=True)
    r = recipe("mobilenet_v2")
    assert r.weights == "imagenet" and r.weights_sha256 == hashlib.sha256(b"pretend weights").hexdigest()
    assert imagenet_weights_path(spec).read_bytes() == b"pretend weights"
    rows = {b.name: b.imagenet for b in list_backbones()}
    assert r.label == "mobilenet_v2" and rows["mobilenet_v2"] == "trusted" and rows["vgg16"] == "missing"


def test_input_size_limit_follows_memory(tmp_path):
    assert max_input_size(memory=24 * 2**30) == 5016
    assert max_input_size(memory=2**50) == 5792  # 2**31 values per tensor
    with pytest.raises(UnknownBackboneError, match="too large for vgg16"):
        recipe("vgg16", weights="none", input_size=100_000)
    with pytest.raises(UnknownBackboneError, match="too large for tiny.onnx"):
        recipe(str(build_tiny_onnx(tmp_path / "tiny.onnx")), input_size=100_000)


def test_recipe_digest_and_label_follow_every_option(keras_home):
    base = recipe("vgg16", weights="none", input_size=64)
    assert base.label == "vgg16-64px-random"
    assert base.digest == recipe("vgg16", weights="none", input_size=64).digest
    others = [
        recipe("vgg16", weights="none", input_size=96),
        recipe("vgg16", weights="none", input_size=64, pooling="max"),
        recipe("vgg16", weights="none", input_size=64, layer="block4_pool"),
        recipe("vgg19", weights="none", input_size=64),
    ]
    assert len({base.digest, *(o.digest for o in others)}) == 5
    assert others[1].label == "vgg16-64px-random-max"
    assert others[2].label == "vgg16-64px-random.block4_pool"


def test_weights_path(tmp_path, keras_home):
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        recipe("vgg16", weights=str(tmp_path / "nope.h5"))
    w = tmp_path / "mine.weights.h5"
    w.write_bytes(b"x")
    r = recipe("vgg16", weights=str(w))
    assert r.label.startswith("vgg16-w") and r.weights == str(w)


def test_input_size_below_minimum():
    with pytest.raises(UnknownBackboneError, match="at least 75 px"):
        recipe("inception_v3", weights="none", input_size=32)


def test_bad_pooling_and_keywords():
    with pytest.raises(InvalidOptionError, match="pooling: must be one of avg, max, not 'sum'"):
        recipe("vgg16", weights="none", pooling="sum")


def test_each_source_claims_its_backbones(tmp_path):
    assert available_sources() == ["finetune", "onnx", "keras", "added", "registry"]
    claimed = {v: find_source(v).kind for v in ("finetune:run-1", "a.onnx", "b.KERAS", "vgg16", "ResNet50")}
    assert claimed == {
        "finetune:run-1": "finetune",
        "a.onnx": "onnx",
        "b.KERAS": "keras",
        "vgg16": "registry",
        "ResNet50": "registry",
    }
    with pytest.raises(
        UnknownBackboneError,
        match=r"valid names: vgg16, .* \(or finetune:<run-id>, a .onnx file, a .keras file, a name given .*\)$",
    ):
        find_source("nope")
    r = recipe("vgg16", weights="none", input_size=64)
    assert source_of(r).title == "a Keras application" and source_of(r).figures(r)[0] == 14714688
    path = build_tiny_onnx(tmp_path / "t.onnx")
    assert source_of(recipe(str(path))).figures(recipe(str(path))) == (None, None)


def test_onnx_file_recipe(tmp_path):
    path = build_tiny_onnx(tmp_path / "My Net.onnx", size_px=20)
    r = recipe(str(path))
    assert (r.kind, r.name, r.input_size, r.label) == ("onnx", "My_Net", 20, "My_Net")
    with pytest.raises(InvalidOptionError, match="layer: works with registry and .keras backbones"):
        recipe(str(path), layer="x")


def test_bad_model_files(tmp_path):
    with pytest.raises(UnknownBackboneError, match="does not exist"):
        recipe(str(tmp_path / "missing.onnx"))
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(UnknownBackboneError, match="not a readable ONNX model"):
        recipe(str(junk))
    bad_keras = tmp_path / "bad.keras"
    bad_keras.write_bytes(b"zip?")
    with pytest.raises(UnknownBackboneError, match="not a readable .keras model"):
        recipe(str(bad_keras))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vgg16", "mobilenet_v2", "efficientnet_b0"])
def test_catalog_weights_match_keras_own_application_code(name):
    from featstore.backbones.applications import load_catalog
    from featstore.backbones.catalog import keras_weights_record

    recorded = dict(load_catalog()[name]["weights"])
    recorded.pop("size")  # not in Keras' code: taken from Keras' own download logs
    assert keras_weights_record(name) == recorded


def test_a_new_source_is_one_registration(tmp_path, photos, store):
    """A source of generated backbones, `gen:N` (N features): claimed, exported and extracted
    with no change anywhere else."""
    from conftest import via_store

    from featstore.backbones.export import import_onnx
    from featstore.backbones.recipes import SOURCES, BackboneRecipe, BackboneSource, register_source
    from featstore.files import sha256_file

    def gen_recipe(opts, layout, reporter):
        n = int(opts.backbone.split(":", 1)[1])
        path = build_tiny_onnx(tmp_path / f"gen{n}.onnx", n_features=n)
        return BackboneRecipe("gen", f"gen{n}", 16, "file", sha256_file(path), None, "avg", str(path))

    claims = lambda value, layout: value.startswith("gen:")  # noqa: E731
    register_source(BackboneSource("gen", "a generated network", claims, gen_recipe, import_onnx))
    try:
        assert available_sources()[-1] == "gen" and find_source("gen:5").kind == "gen"
        r = via_store("extract")(photos, "gen:5", store=store, emissions=False)
        assert (r.feature_set, r.n_features, r.n_computed) == ("photos@gen5", 5, 8)
    finally:
        SOURCES.remove("gen")
