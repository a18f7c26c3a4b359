"""Networks added by name: preprocessing read from configs and flags, folded into the graph with the
pooling, features equal to those computed by hand (ONNX Runtime on the file as given, numpy around
it), and every way an add can be refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx_nets import build_net
from typer.testing import CliRunner

from featstore.backbones.adding import add_backbone, added_backbones, remove_backbone
from featstore.backbones.folding import by_hand, pool_by_hand, signature
from featstore.backbones.options import AddOptions
from featstore.backbones.preprocessing import Preprocessing, read_config
from featstore.data.decode import decode_image
from featstore.errors import FeatstoreError, InvalidOptionError, UnknownBackboneError
from featstore_cli.app import app

runner = CliRunner()

#: As Hugging Face writes DINOv2's (shortest edge 256 then centre 224, bicubic), shrunk to 16 px.
HF_CROP = {
    "image_processor_type": "BitImageProcessor",
    "do_resize": True,
    "size": {"shortest_edge": 20},
    "do_center_crop": True,
    "crop_size": {"height": 16, "width": 16},
    "resample": 3,
    "do_rescale": True,
    "rescale_factor": 0.00392156862745098,
    "do_normalize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
}
#: As SigLIP's: squashed to the size, bilinear, mean and std 0.5.
HF_SQUASH = {
    "image_processor_type": "SiglipImageProcessor",
    "size": {"height": 16, "width": 16},
    "resample": 2,
    "rescale_factor": 0.00392156862745098,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
}
#: A timm config.json (ConvNeXt's pretrained_cfg at 16 px).
TIMM = {
    "architecture": "convnext_tiny",
    "num_features": 8,
    "pretrained_cfg": {
        "input_size": [3, 16, 16],
        "interpolation": "bicubic",
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "crop_pct": 0.875,
        "crop_mode": "center",
    },
}


def _write(path: Path, doc: dict) -> Path:
    path.write_text(json.dumps(doc))
    return path


def test_configs_read_as_their_libraries_mean_them(tmp_path):
    crop = read_config(_write(tmp_path / "preprocessor_config.json", HF_CROP))
    assert (crop.resize_key, crop.input_size, crop.layout) == ("crop:0.8:bicubic", 16, "nchw")
    assert crop.mean == (0.485, 0.456, 0.406) and crop.scale == pytest.approx(1 / 255)
    squash = read_config(_write(tmp_path / "siglip.json", HF_SQUASH))
    assert (squash.resize_key, squash.input_size, squash.std) == ("squash", 16, (0.5, 0.5, 0.5))
    timm = read_config(_write(tmp_path / "config.json", TIMM))
    assert (timm.resize_key, timm.input_size) == ("crop:0.875:bicubic", 16)
    a, b = Preprocessing(scale=1 / 127.5, mean=(1, 1, 1)).affine()  # Keras' "tf" mode
    assert np.allclose(np.float32(255) * a[0] + b[0], 1) and b == [-1.0, -1.0, -1.0]
    with pytest.raises(InvalidOptionError, match="neither a Hugging Face"):
        read_config(_write(tmp_path / "other.json", {"hidden_size": 3}))
    wide = read_config(_write(tmp_path / "wide.json", {**HF_SQUASH, "size": {"height": 16, "width": 20}}))
    assert (wide.size, wide.resize_key) == ((16, 20), "squash")
    tall = read_config(
        _write(
            tmp_path / "tall.json", {"pretrained_cfg": {**TIMM["pretrained_cfg"], "input_size": [3, 20, 12]}}
        )
    )
    assert tall.size == (20, 12)


def _by_hand(path: Path, output: str, pooling: str, spec: Preprocessing, pixels: np.ndarray) -> np.ndarray:
    sig = signature(onnx.load(str(path)), spec.layout)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    raw = session.run([output], {sig.input: by_hand(pixels, spec, sig)})[0]
    return pool_by_hand(raw, pooling, sig.layout)


def _folded(store: Path, name: str) -> ort.InferenceSession:
    found = sorted((store / "backbones").glob(f"{name}-*.onnx"))
    assert len(found) == 1, found
    return ort.InferenceSession(str(found[0]), providers=["CPUExecutionProvider"])


NETS = [  # (build_net keywords, --output, pooling, flags)
    ({"layout": "nchw", "outputs": ("pooled",)}, None, "avg", {"preprocess": "torch"}),
    ({"layout": "nhwc", "outputs": ("spatial",)}, None, "gem", {"preprocess": "caffe"}),
    ({"layout": "nchw", "dtype": "float16", "outputs": ("spatial",)}, None, "max", {"mean": (0.5,) * 3, "std": (0.5,) * 3}),
    ({"layout": "nchw", "outputs": ("tokens", "pooled")}, "tokens", "cls+mean", {"preprocess": "tf"}),
    ({"layout": "nchw", "dynamic": True, "outputs": ("tokens",)}, None, "cls", {"preprocess": "torch", "input_size": 12}),
    ({"layout": "nchw", "external": True, "outputs": ("pooled",)}, None, "avg", {"preprocess": "torch"}),
    ({"layout": "nchw", "size": 12, "width": 20, "outputs": ("spatial",)}, None, "avg", {"preprocess": "torch"}),
    ({"layout": "nhwc", "size": 20, "width": 12, "outputs": ("tokens",)}, None, "mean", {"preprocess": "tf"}),
]  # fmt: skip


@pytest.mark.parametrize(
    "net, output, pooling, flags", NETS, ids=lambda v: str(v)[:40] if isinstance(v, dict) else None
)
def test_added_networks_give_the_features_computed_by_hand(tmp_path, net, output, pooling, flags):
    path = build_net(tmp_path / "net.onnx", **net)
    store = tmp_path / "store"
    card = add_backbone("net", path, AddOptions(output=output, pooling=pooling, **flags), store=store)
    assert card.cosine >= 0.999 and card.n_params > 0
    h, w = card.input_size, card.input_width or card.input_size
    pixels = np.random.default_rng(3).integers(0, 256, (5, h, w, 3)).astype(np.uint8)
    got = _folded(store, "net").run(None, {"pixels": pixels})[0]
    want = _by_hand(path, card.output, pooling, card.spec, pixels)
    assert got.dtype == np.float32 and got.shape == want.shape == (5, card.n_features)
    tol = 2e-2 if net.get("dtype") == "float16" else 1e-4
    assert np.allclose(got, want, rtol=tol, atol=tol)
    if net.get("external"):  # the store holds one file, the weights inside
        assert [p.name for p in (store / "backbones/added/net").iterdir()] == [
            "card.json",
            "network.onnx",
        ] or set(p.name for p in (store / "backbones/added/net").iterdir()) == {"card.json", "network.onnx"}


def test_cli_add_extract_list_and_remove(tmp_path, photos):
    """The whole way from the command line: an NCHW network with a Hugging Face config (centre
    crop, bicubic) is added, extracted with by name, listed and removed; the stored features are
    the network's on pixels decoded as the config says."""
    path = build_net(tmp_path / "net.onnx", outputs=("tokens", "pooled"))
    config = _write(tmp_path / "preprocessor_config.json", HF_CROP)
    store = str(tmp_path / "store")
    add = ["backbones", "add", "mine", "--from", str(path), "--config", str(config), "--store", store]
    refused = runner.invoke(app, add)
    assert refused.exit_code == 1
    assert refused.output.strip().splitlines()[-1] == (
        "Error: --output: the network has several outputs; choose one of tokens, pooled with --output"
    )
    done = runner.invoke(app, [*add, "--output", "tokens", "--pooling", "cls", "--json"])
    assert done.exit_code == 0, done.output
    card = json.loads(done.stdout)
    assert (card["input_size"], card["layout"], card["n_features"]) == (16, "nchw", 8)
    extracted = runner.invoke(
        app,
        [
            "extract",
            "--data",
            str(photos),
            "--backbone",
            "mine",
            "--store",
            store,
            "--no-emissions",
            "--json",
        ],
    )
    assert extracted.exit_code == 0, extracted.output
    from featstore import Store

    fs = Store(store).feature_set("photos@mine-cls")
    assert fs.attrs["resize"] == "crop:0.8:bicubic"
    pixels = np.stack([decode_image((photos / p).read_bytes(), 16, "crop:0.8:bicubic") for p in fs.paths])
    want = _by_hand(path, "tokens", "cls", read_config(config), pixels)
    assert np.allclose(fs.features, want, atol=1e-4)
    listed = runner.invoke(app, ["backbones", "--store", store, "--json"])
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert rows["mine"]["source"] == "added-onnx" and rows["mobilenet_v2"]["source"] == "keras-app"
    assert rows["mine"]["sha256"] == card["sha256"]
    assert runner.invoke(app, ["backbones", "rm", "mine", "--store", store]).exit_code == 0
    assert added_backbones(store) == []
    gone = runner.invoke(app, ["extract", "--data", str(photos), "--backbone", "mine", "--store", store])
    assert gone.exit_code == 1 and "unknown backbone 'mine'" in gone.output


def test_what_is_refused_and_why(tmp_path, photos):
    path = build_net(tmp_path / "net.onnx")
    store = tmp_path / "store"
    with pytest.raises(InvalidOptionError, match="cannot know what net.onnx expects.*--preprocess"):
        add_backbone("a", path, store=store)
    with pytest.raises(InvalidOptionError, match="a Keras application's name"):
        add_backbone("mobilenet_v2", path, AddOptions(preprocess="torch"), store=store)
    with pytest.raises(InvalidOptionError, match="use letters"):
        add_backbone("../up", path, AddOptions(preprocess="torch"), store=store)
    with pytest.raises(UnknownBackboneError, match="does not exist"):
        add_backbone("a", tmp_path / "none.onnx", AddOptions(preprocess="torch"), store=store)
    with pytest.raises(InvalidOptionError, match=r"pooling: a spatial map|pooling"):
        add_backbone(
            "a",
            build_net(tmp_path / "s.onnx", outputs=("spatial",)),
            AddOptions(preprocess="torch", pooling="cls"),
            store=store,
        )
    wide = build_net(tmp_path / "w.onnx", dynamic=True)
    with pytest.raises(InvalidOptionError, match="takes any size; give one"):
        add_backbone("a", wide, AddOptions(preprocess="torch"), store=store)
    with pytest.raises(InvalidOptionError, match="takes 16 px images, not 20 px"):
        add_backbone("a", path, AddOptions(preprocess="torch", input_size=20), store=store)
    assert not (store / "backbones/added").exists() or not any((store / "backbones/added").iterdir())
    add_backbone("a", path, AddOptions(preprocess="torch"), store=store)
    with pytest.raises(InvalidOptionError, match="already added"):
        add_backbone("a", path, AddOptions(preprocess="tf"), store=store)
    with pytest.raises(UnknownBackboneError, match="no backbone 'b' was added; added: a|added: a"):
        remove_backbone("b", store)
    direct = runner.invoke(
        app, ["extract", "--data", str(photos), "--backbone", str(path), "--store", str(store)]
    )
    assert direct.exit_code == 1 and "featstore backbones add NAME --from FILE" in direct.output


def test_a_changed_preprocessing_never_mixes_features(tmp_path, photos):
    """Replacing an added backbone's preprocessing changes its digest: the stored features are not
    taken for the new ones."""
    from featstore import Store

    s = Store(tmp_path / "store", emissions=False)
    path = build_net(tmp_path / "net.onnx")
    s.add_backbone("net", path, preprocess="torch")
    s.extract(photos, "net")
    s.add_backbone("net", path, preprocess="tf", replace=True)
    with pytest.raises(FeatstoreError, match="--force"):
        s.extract(photos, "net")
    assert s.extract(photos, "net", force=True).n_computed == 8
    assert [c.name for c in s.backbones()] == ["net"]


def _tiny_keras(path: Path, lambda_layer: bool = False) -> Path:
    """A small Keras CNN without preprocessing layers, expecting inputs in [-1, 1] (like the Keras
    applications' MobileNetV2 saved plainly), optionally with an unsafe Lambda layer."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu")(inputs)
    if lambda_layer:
        x = keras.layers.Lambda(lambda t: t * 2.0)(x)
    outputs = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(8, 3, strides=2)(x))
    keras.Model(inputs, outputs).save(path)
    return path


@pytest.mark.slow
def test_a_users_keras_file_is_added_with_its_preprocessing(tmp_path, photos):
    import keras

    path = _tiny_keras(tmp_path / "mine.keras")
    store = tmp_path / "store"
    with pytest.raises(InvalidOptionError, match="--preprocess"):
        add_backbone("mine", path, store=store)
    card = add_backbone("mine", path, AddOptions(preprocess="tf"), store=store)
    assert (card.kind, card.layout, card.n_features, card.input_size) == ("keras", "nhwc", 8, 16)
    pixels = np.random.default_rng(5).integers(0, 256, (4, 16, 16, 3)).astype(np.uint8)
    want = keras.models.load_model(path)(pixels.astype(np.float32) / 127.5 - 1.0).numpy()
    got = _folded(store, "mine").run(None, {"pixels": pixels})[0]
    assert np.allclose(got, want, atol=1e-4)
    unsafe = _tiny_keras(tmp_path / "unsafe.keras", lambda_layer=True)
    with pytest.raises(UnknownBackboneError, match="runs code from the file.*--trust"):
        add_backbone("unsafe", unsafe, AddOptions(preprocess="tf"), store=store)
    assert (
        add_backbone("unsafe", unsafe, AddOptions(preprocess="tf", trust=True), store=store).cosine >= 0.999
    )
    direct = runner.invoke(
        app, ["extract", "--data", str(photos), "--backbone", str(path), "--store", str(store)]
    )
    assert direct.exit_code == 1
    assert "mine.keras has no preprocessing layer inside (Rescaling, Normalization)" in direct.output
    assert "featstore backbones add NAME --from" in direct.output


def test_resize_with_a_crop_fraction_is_timms(tmp_path):
    """`crop:0.875:bicubic`: the shorter side to floor(size / 0.875), then the centre, bicubic (as
    timm's and torchvision's Resize + CenterCrop do); bad forms are one line."""
    from PIL import Image

    from featstore.data.options import DecodeOptions, parse_resize

    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8))
    path = tmp_path / "x.png"
    img.save(path)
    got = decode_image(path.read_bytes(), 16, "crop:0.875:bicubic")
    side = int(16 / 0.875)  # 18
    scaled = img.resize((int(side * 70 / 50), side), Image.Resampling.BICUBIC)
    left, top = int(round((scaled.width - 16) / 2)), int(round((scaled.height - 16) / 2))
    assert np.array_equal(got, np.asarray(scaled.crop((left, top, left + 16, top + 16))))
    assert (
        parse_resize("crop:0.875:bicubic").key == "crop:0.875:bicubic"
        and parse_resize("crop:1").key == "crop"
    )
    for bad in ("squash:0.9", "crop:1.5", "crop:lanczos", "zoom"):
        with pytest.raises(InvalidOptionError, match="resize"):
            parse_resize(bad)
    assert DecodeOptions().for_backbone("crop:0.875:bicubic").resize == "crop:0.875:bicubic"
    assert DecodeOptions(resize="pad").for_backbone("crop:0.875:bicubic").resize == "pad"
    assert DecodeOptions().for_backbone(None).resize == "squash"


def test_a_network_with_a_non_square_input_runs_end_to_end(tmp_path):
    """A 12 x 20 px network: extracted (images squashed to 12 x 20), features as by hand, a head
    fitted, scored from a pixel array, and exported as one file taking (N, 12, 20, 3)."""
    from conftest import make_class_folders

    from featstore import Store

    photos = make_class_folders(tmp_path / "photos", n_per_class=6)
    path = build_net(tmp_path / "wide.onnx", size=12, width=20)
    s = Store(tmp_path / "store", emissions=False)
    card = s.add_backbone("wide", path, preprocess="torch")
    assert (card.input_size, card.input_width) == (12, 20)
    result = s.extract(photos, "wide")
    fs = s.feature_set(result.feature_set)
    assert (fs.attrs["input_size"], fs.attrs["input_width"]) == (12, 20)
    pixels = np.stack([decode_image((photos / p).read_bytes(), (12, 20), "squash") for p in fs.paths])
    assert np.allclose(fs.features, _by_hand(path, "pooled", "avg", card.spec, pixels), atol=1e-4)
    [head] = s.fit_head("logistic", result.feature_set, test_size=0.25, val_size=0.2)
    proba = s.head(head.head_id).predict(pixels[:3], use_store=False).proba
    assert proba.shape == (3, 2)
    exported = s.export(head.head_id, tmp_path / "wide-head.onnx")
    model = onnx.load(str(tmp_path / "wide-head.onnx"))
    dims = [d.dim_value or d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["n", 12, 20, 3] and exported.max_abs_diff < 1e-4


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--mean", "0.5,0.5", "--std", "0.5,0.5,0.5"],
            "Error: --mean: needs 3 values (R,G,B), not [0.5, 0.5]",
        ),
        (["--mean", "a,b,c", "--std", "1,1,1"], "'a,b,c': give 3 numbers, R,G,B"),
        (
            ["--preprocess", "torch", "--channels", "grb"],
            "Error: --channels: must be one of rgb, bgr, not 'grb'",
        ),
        (["--preprocess", "torch", "--crop-pct", "1.5"], "Error: --crop-pct: must lie in (0, 1], not 1.5"),
        (["--preprocess", "torch", "--std", "0,1,1"], "Error: --std: must be 3 positive numbers"),
        (["--config", "CONFIG"], "cannot read"),
        (
            ["--preprocess", "torch", "--from-txt"],
            "is neither an ONNX (.onnx) nor a Keras (.keras, .h5) file",
        ),
    ],
)
def test_bad_add_options_are_one_line(tmp_path, flags, message):
    net = build_net(tmp_path / "net.onnx")
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "net.txt").write_text("a network?")
    source = tmp_path / ("net.txt" if "--from-txt" in flags else "net.onnx")
    flags = [str(tmp_path / "bad.json") if f == "CONFIG" else f for f in flags if f != "--from-txt"]
    out = runner.invoke(
        app, ["backbones", "add", "n", "--from", str(source), *flags, "--store", str(tmp_path / "s")]
    )
    assert out.exit_code in (1, 2) and message in out.output, out.output
    assert net.is_file() and not (tmp_path / "s" / "backbones" / "added" / "n").exists()
