"""Shared fixtures: tiny real image folders, a tiny ONNX backbone, a store in a temp folder."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("FEATSTORE_COUNTRY", "FRA")

TINY_PX = 16
REPO = Path(__file__).resolve().parents[1]
FLOWERS = REPO.parent / "shared" / "data" / "flowers"


def write_image(path: Path, seed: int, size=(24, 20), mode: str = "RGB", fmt: str | None = None) -> Path:
    """Write a small real image file with content determined by `seed`."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    base = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    img = Image.fromarray(base, "RGB")
    if mode != "RGB":
        img = img.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format=fmt)
    return path


def make_class_folders(
    root: Path, classes=("cat", "dog"), n_per_class: int = 4, seed: int = 0, prefix: str = ""
) -> Path:
    """Write `n_per_class` JPEGs per class folder under `root`; return `root`."""
    for ci, c in enumerate(classes):
        for i in range(n_per_class):
            write_image(root / c / f"{prefix}{c}{i}.jpg", seed * 100000 + ci * 1000 + i)
    return root


def build_tiny_onnx(path: Path, size_px: int = TINY_PX, n_features: int = 8, seed: int = 0) -> Path:
    """Write a tiny real ONNX backbone: uint8 NHWC pixels -> conv -> relu -> avg pool (N, n_features)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.05, (n_features, 3, 3, 3)).astype(np.float32)
    b = rng.normal(0, 0.1, (n_features,)).astype(np.float32)
    nodes = [
        helper.make_node("Cast", ["pixels"], ["xf"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["xf"], ["xt"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["xt", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["features"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["n", size_px, size_px, 3])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n", n_features])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory) -> Path:
    """A tiny ONNX backbone file (16 px input, 8 features)."""
    return build_tiny_onnx(tmp_path_factory.mktemp("models") / "tiny.onnx")


@pytest.fixture
def photos(tmp_path) -> Path:
    """A folder of two class folders, four real JPEGs each."""
    return make_class_folders(tmp_path / "photos")


@pytest.fixture
def store(tmp_path) -> Path:
    """An empty store root."""
    return tmp_path / "store"


@pytest.fixture
def keras_home(tmp_path, monkeypatch) -> Path:
    """An empty $KERAS_HOME, so no ImageNet weights are cached."""
    home = tmp_path / "keras_home"
    (home / "models").mkdir(parents=True)
    monkeypatch.setenv("KERAS_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def mnv2_store(tmp_path_factory) -> Path:
    """A store holding the ONNX export of MobileNetV2 at 32 px with random weights (exported once)."""
    from featstore.backbones import resolve_recipe
    from featstore.export import ensure_backbone
    from featstore.layout import resolve_store

    root = tmp_path_factory.mktemp("mnv2") / "store"
    ensure_backbone(resolve_recipe("mobilenet_v2", weights="none", input_size=32), resolve_store(root))
    return root


@pytest.fixture
def store_with_mnv2(tmp_path, mnv2_store) -> Path:
    """A fresh store that already holds the MobileNetV2 32 px export."""
    import shutil

    root = tmp_path / "store"
    shutil.copytree(mnv2_store / "backbones", root / "backbones")
    return root
