"""`extract --precision`: int8 models calibrated on real images, their cache, the accuracy
check, fp16 conversion, and precisions never mixing in feature sets or heads."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import make_class_folders, via_store

from featstore.errors import DeviceError, InvalidOptionError, StoreError, StoreMismatchError
from featstore.inference.calibration import compare_features, spread
from featstore.inference.devices import gpu_count
from featstore.inference.onnxruntime_runtime import open_session
from featstore.inference.precision import accuracy_warning, precision_label
from featstore.inference.runtimes import resolve_runtime
from featstore.inference.variants import ModelVariant, find_variant
from featstore.store.layout import resolve_store
from featstore.store.shards import open_feature_set

extract = via_store("extract")


no_gpu = pytest.mark.skipif(gpu_count() > 0, reason="this machine has a GPU")


def run(data, store, backbone, **kw):
    """extract under ONNX Runtime (int8 under OpenVINO is tests/inference/test_openvino.py's)."""
    kw.setdefault("emissions", False)
    kw.setdefault("runtime", "onnxruntime")
    return extract(str(data), str(backbone), store=str(store), **kw)


def read(store, name):
    with open_feature_set(resolve_store(store), name) as r:
        return r.read_features().astype(np.float32), r.attrs, r.rows()


def cosine(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_int8_features_are_their_own_set_close_to_fp32(tmp_path, store, tiny_onnx):
    photos = make_class_folders(tmp_path / "photos", n_per_class=6)
    r32 = run(photos, store, tiny_onnx)
    logs = []
    r8 = run(photos, store, tiny_onnx, precision="int8", log=logs.append)
    assert (r32.feature_set, r8.feature_set) == ("photos@tiny", "photos@tiny-int8")
    assert r8.precision == "int8" and r8.backbone == "tiny-int8"
    assert r8.backbone_digest != r32.backbone_digest
    assert any("quantizing tiny to int8, calibrated on 12 of your images" in m for m in logs)
    f32, a32, _ = read(store, "photos@tiny")
    f8, a8, _ = read(store, "photos@tiny-int8")
    assert cosine(f32, f8).min() > 0.99 and not np.array_equal(f32, f8)
    assert a32["precision"] == "fp32" and a8["precision"] == "int8"
    assert a8["base_digest"] == r32.backbone_digest == a32["backbone_digest"]
    assert a8["model"]["calibration"]["n_images"] == 12
    # the int8 model sits next to the fp32 file, with a sidecar, and is found by its digest
    layout = resolve_store(store)
    variant = find_variant(layout, r8.backbone_digest)
    assert variant is not None and variant.path.parent == layout.backbones
    assert variant.path.name.startswith("tiny-16-") and "-int8-" in variant.path.name
    assert json.loads(variant.path.with_suffix(".json").read_text())["digest"] == r8.backbone_digest
    # the stored features are the int8 model's output
    from featstore.data.decode import decode_image

    rows = read(store, "photos@tiny-int8")[2]
    px = np.stack([decode_image((photos / p).read_bytes(), 16) for p in rows.paths])
    np.testing.assert_allclose(open_session(variant.path, "cpu").run(px), f8, rtol=1e-5, atol=1e-6)
    # the check ran on the same images (none left over) and found no loss
    c = r8.precision_check
    assert c["n_images"] == 12 and c["held_out"] is False and c["cosine_min"] > 0.99
    assert c["accuracy_loss_points"] is not None and r8.warnings == []


def test_int8_model_is_reused_for_other_data_unless_recalibrated(tmp_path, store, tiny_onnx):
    a = make_class_folders(tmp_path / "a", n_per_class=3)
    b = make_class_folders(tmp_path / "b", n_per_class=3, seed=7)
    ra = run(a, store, tiny_onnx, precision="int8", n_check=0)
    logs = []
    rb = run(b, store, tiny_onnx, precision="int8", log=logs.append)
    assert rb.backbone_digest == ra.backbone_digest  # a head trained on a can score b
    assert any("using the int8 model of tiny calibrated on a (6 images)" in m for m in logs)
    assert ra.precision_check is None and rb.calibration["dataset"] == "a"
    rc = run(b, store, tiny_onnx, precision="int8", recalibrate=True, name="b2")
    assert rc.backbone_digest != ra.backbone_digest and rc.calibration["dataset"] == "b2"
    # a set keeps the int8 model it was made with: an unchanged re-run computes nothing
    again = run(b, store, tiny_onnx, precision="int8")
    assert again.n_computed == 0 and not again.written and again.backbone_digest == ra.backbone_digest
    # new sets take the latest int8 model
    assert run(a, store, tiny_onnx, precision="int8", name="a2").backbone_digest == rc.backbone_digest
    # recalibrated features never mix with a set made by another int8 model
    with pytest.raises(StoreMismatchError, match="precision int8"):
        run(b, store, tiny_onnx, precision="int8", recalibrate=True)


def test_calibration_sample_and_check_sample_are_disjoint(tmp_path, store, tiny_onnx):
    photos = make_class_folders(tmp_path / "photos", n_per_class=10)
    r = run(photos, store, tiny_onnx, precision="int8", n_calibration=8, n_check=6)
    assert r.calibration["n_images"] == 8
    c = r.precision_check
    assert c["n_images"] == 6 and c["held_out"] is True and c["n_folds"] == 3
    assert spread(10, 4) == [0, 3, 6, 9] and spread(10, 3, exclude={0, 3, 6, 9}) == [1, 4, 8]
    assert spread(3, 5) == [0, 1, 2]


def test_int8_head_refuses_fp32_features(tmp_path, store, tiny_onnx):
    from conftest import via_store

    evaluate = via_store("evaluate")
    from conftest import via_store

    fit_head = via_store("fit_head")

    photos = make_class_folders(tmp_path / "photos", n_per_class=6)
    run(photos, store, tiny_onnx)
    run(photos, store, tiny_onnx, precision="int8", n_check=0)
    fit_head("logistic", ["photos@tiny-int8"], store=str(store), name="h8", emissions=False, test_size=0.25)
    assert evaluate("h8", ["photos@tiny-int8"], store=str(store)).n_rows == 12
    with pytest.raises(StoreMismatchError, match=r"int8 features of tiny-int8 .* fp32 features of tiny"):
        evaluate("h8", ["photos@tiny"], store=str(store))


def test_unlabelled_data_gets_cosine_only(tmp_path, store, tiny_onnx):
    from conftest import write_image

    for i in range(5):
        write_image(tmp_path / "flat" / f"{i}.jpg", i)
    r = run(tmp_path / "flat", store, tiny_onnx, precision="int8")
    assert r.precision_check["cosine_mean"] > 0.99
    assert (
        r.precision_check["accuracy_loss_points"] is None and "no accuracy check" in r.precision_check["note"]
    )


@pytest.mark.slow
def test_int8_mobilenet_v2_runs_and_stays_close(tmp_path, store_with_mnv2):
    photos = make_class_folders(tmp_path / "photos", n_per_class=8)
    r = run(photos, store_with_mnv2, "mobilenet_v2", weights="none", input_size=32, precision="int8")
    assert r.feature_set == "photos@mobilenet_v2-32px-random-int8" and r.n_computed == 16
    assert r.precision_check["cosine_mean"] > 0.9


def test_bad_precisions(photos, store, tiny_onnx):
    with pytest.raises(InvalidOptionError, match="precision: must be one of fp32, int8, fp16"):
        run(photos, store, tiny_onnx, precision="int4")
    with pytest.raises(InvalidOptionError, match="n_calibration: must be at least 1"):
        run(photos, store, tiny_onnx, precision="int8", n_calibration=0)
    assert not (store / "features").exists() or not any((store / "features").iterdir())


@no_gpu
def test_fp16_without_gpu_is_an_error(photos, store, tiny_onnx):
    with pytest.raises(DeviceError, match="--precision fp16 runs on a GPU"):
        run(photos, store, tiny_onnx, precision="fp16")  # --device auto is the CPU here
    with pytest.raises(DeviceError, match="--device cuda asked for"):
        run(photos, store, tiny_onnx, precision="fp16", device="cuda")
    assert resolve_runtime("cuda", "auto", "fp16").name == "onnxruntime"


def test_fp16_conversion_keeps_uint8_in_and_float_out(tmp_path, tiny_onnx):
    import onnx

    from featstore.inference.quantize import convert_fp16

    out = tmp_path / "half.onnx"
    convert_fp16(tiny_onnx, out)
    m = onnx.load(str(out))
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert m.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    weights = {t.name: t.data_type for t in m.graph.initializer}
    assert weights["w"] == onnx.TensorProto.FLOAT16
    # the CPU provider can run it (slowly, through casts): its features match fp32 closely
    x = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    want = open_session(tiny_onnx, "cpu").run(x)
    got = open_session(out, "cpu").run(x)
    assert cosine(want, got).min() > 0.999


def test_int8_without_images_to_calibrate_is_an_error(tmp_path, tiny_onnx):
    from featstore.backbones.export import ensure_backbone
    from featstore.backbones.options import BackboneOptions
    from featstore.backbones.recipes import resolve_recipe
    from featstore.inference.options import PrecisionOptions
    from featstore.inference.precision import prepare_model
    from featstore.inference.runtimes import Target

    layout = resolve_store(tmp_path / "store")
    exported = ensure_backbone(resolve_recipe(BackboneOptions(str(tiny_onnx))), layout)
    target = Target("cpu")
    with pytest.raises(StoreError, match="no int8 model of tiny.*run extract --precision int8"):
        prepare_model(exported, PrecisionOptions("int8"), layout, target)
    assert prepare_model(exported, PrecisionOptions(), layout, target).digest == exported.digest


def test_accuracy_warning_over_half_a_point():
    check = {"accuracy_loss_points": 1.2, "n_images": 300, "fp32_accuracy": 0.9, "int8_accuracy": 0.888}
    v = ModelVariant(path=None, precision="int8", digest="d", base_digest="b", onnx_sha256="", check=check)
    assert "lose 1.2 accuracy points" in accuracy_warning(v) and "90.0 % -> 88.8 %" in accuracy_warning(v)
    ok = ModelVariant(None, "int8", "d", "b", "", check={**check, "accuracy_loss_points": 0.4})
    assert accuracy_warning(ok) is None


def test_compare_features_sees_damage():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    X = rng.normal(0, 1, (3, 16))[labels] * 3 + rng.normal(0, 1, (60, 16))
    same = compare_features(X, X.copy(), labels)
    assert same["cosine_min"] == pytest.approx(1.0) and same["accuracy_loss_points"] == 0
    assert same["agreement"] == 1.0 and same["n_folds"] == 5
    noisy = compare_features(X, X + rng.normal(0, 6, X.shape), labels)
    assert noisy["cosine_mean"] < 0.9 and noisy["accuracy_loss_points"] > 0.5


def test_precision_labels():
    assert precision_label("vgg16-160px", "fp32") == "vgg16-160px"
    assert precision_label("vgg16-160px", "int8") == "vgg16-160px-int8"


def test_corrupt_images_are_left_out_of_the_calibration(tmp_path, store, tiny_onnx):
    photos = make_class_folders(tmp_path / "photos", n_per_class=4)
    (photos / "cat" / "broken.jpg").write_bytes(b"not a jpeg")
    (photos / "dog" / "copy.jpg").write_bytes((photos / "dog" / "dog0.jpg").read_bytes())
    r = run(photos, store, tiny_onnx, precision="int8")
    assert r.n_skipped == 1 and r.skipped[0].path == "cat/broken.jpg"
    assert r.calibration["n_images"] == 8  # the corrupt file out, the duplicate counted once


def test_store_show_names_the_precision(tmp_path, store, tiny_onnx):
    from typer.testing import CliRunner

    from featstore_cli.app import app

    photos = make_class_folders(tmp_path / "photos", n_per_class=3)
    run(photos, store, tiny_onnx, precision="int8", n_check=0)
    out = CliRunner().invoke(app, ["store", "show", "photos@tiny-int8", "--store", str(store)])
    assert out.exit_code == 0 and "  precision: int8" in out.stdout.splitlines()
    assert CliRunner().invoke(app, ["store", "verify", "--store", str(store)]).exit_code == 0


def test_int8_extract_never_imports_tensorflow(photos, store, tiny_onnx):
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from featstore import Store\n"
        f"r = Store({str(store)!r}, emissions=False).extract({str(photos)!r}, {str(tiny_onnx)!r}, precision='int8')\n"
        "assert r.n_computed == 8 and r.precision_check is not None, r\n"
        "print([m for m in ('tensorflow', 'keras', 'tf2onnx', 'torch') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_speed_warning_when_int8_does_not_pay_off():
    from featstore.inference.precision import speed_warning

    check = {"n_images": 100, "fp32_images_per_s": 24.0, "int8_images_per_s": 13.0}
    slow = ModelVariant(None, "int8", "d", "b", "", check=check)
    assert speed_warning(slow).startswith("the int8 model ran at 13.0 images/s against 24.0 for fp32")
    fast = ModelVariant(None, "int8", "d", "b", "", check={**check, "int8_images_per_s": 60.0})
    few = ModelVariant(None, "int8", "d", "b", "", check={**check, "n_images": 12})
    assert speed_warning(fast) is None and speed_warning(few) is None


def test_fp16_of_a_preprocess_read_twice_loads(tmp_path):
    """A folded preprocess whose cast feeds two blocked nodes (as caffe's channel flip and mean
    do in VGG and ResNet) makes the converter repeat a cast; the fp16 model must still load."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from featstore.inference.quantize import convert_fp16

    w = numpy_helper.from_array(np.random.default_rng(0).normal(0, 0.1, (4, 3, 3, 3)).astype(np.float32), "w")
    mean = numpy_helper.from_array(np.array([100.0, 110.0, 120.0], np.float32).reshape(1, 1, 1, 3), "mean")
    nodes = [
        helper.make_node("Cast", ["pixels"], ["xf"], to=TensorProto.FLOAT, name="m/preprocess/Cast"),
        helper.make_node("Sub", ["xf", "mean"], ["xs"], name="m/preprocess/Sub"),
        helper.make_node("Mul", ["xf", "mean"], ["xm"], name="m/preprocess/Mul"),
        helper.make_node("Add", ["xs", "xm"], ["xa"], name="m/preprocess/Add"),
        helper.make_node("Transpose", ["xa"], ["xt"], perm=[0, 3, 1, 2], name="t"),
        helper.make_node("Conv", ["xt", "w"], ["c"], pads=[1, 1, 1, 1], name="c"),
        helper.make_node("GlobalAveragePool", ["c"], ["p"], name="gap"),
        helper.make_node("Flatten", ["p"], ["features"], axis=1, name="fl"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["n", 8, 8, 3])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n", 4])],
        initializer=[w, mean],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "m.onnx"))
    convert_fp16(tmp_path / "m.onnx", tmp_path / "m16.onnx")
    session = ort.InferenceSession(str(tmp_path / "m16.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    assert session.run(None, {"pixels": x})[0].shape == (2, 4)
