"""Shared fixtures: tiny real image folders, a tiny ONNX backbone, a store in a temp folder."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("FEATSTORE_COUNTRY", "FRA")
# Tests never reach the internet: downloads are refused unless a test serves them on 127.0.0.1.
os.environ["FEATSTORE_OFFLINE"] = "1"
os.environ.pop("FEATSTORE_WEIGHTS_URL", None)

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
    from featstore.backbones.export import ensure_backbone
    from featstore.backbones.options import BackboneOptions
    from featstore.backbones.recipes import resolve_recipe
    from featstore.store.layout import resolve_store

    root = tmp_path_factory.mktemp("mnv2") / "store"
    recipe = resolve_recipe(BackboneOptions("mobilenet_v2", weights="none", input_size=32))
    ensure_backbone(recipe, resolve_store(root))
    return root


@pytest.fixture
def store_with_mnv2(tmp_path, mnv2_store) -> Path:
    """A fresh store that already holds the MobileNetV2 32 px export."""
    import shutil

    root = tmp_path / "store"
    shutil.copytree(mnv2_store / "backbones", root / "backbones")
    return root


def write_synthetic_set(
    store: Path,
    name: str,
    X: np.ndarray,
    labels,
    class_names: list[str],
    backbone_digest: str = "b" * 64,
    split: list[str] | None = None,
    digests: list[str] | None = None,
    view=None,
    single_file: bool = False,
) -> Path:
    """Write a real feature set with given features (for head tests), sharded, or in the
    single-file layout of earlier versions; return its single-file path."""
    import h5py

    from featstore.store.commits import commit_rows
    from featstore.store.featuresets import FeatureRows, write_feature_set
    from featstore.store.layout import resolve_store
    from featstore.store.parts import FeatureSource

    layout = resolve_store(store)
    n, d = X.shape
    digests = digests or [f"{i:064x}" for i in range(n)]
    view = np.zeros(n, np.int16) if view is None else np.asarray(view)
    keys = [f"{dg}:{v}" for dg, v in zip(digests, view, strict=True)]
    rows = FeatureRows(
        paths=[f"{class_names[y] if y >= 0 else 'x'}/{i}.jpg" for i, y in enumerate(labels)],
        labels=np.asarray(labels),
        digests=list(digests),
        split=split or [""] * n,
        view=view,
    )
    layout.features.mkdir(parents=True, exist_ok=True)
    src = layout.root / f".{name}.src.h5"
    with h5py.File(src, "w") as f:
        f["features"] = X.astype(np.float32)
    source = FeatureSource()
    source.add_path(src, keys)
    dataset, backbone = name.split("@")
    attrs = {
        "class_names": class_names,
        "backbone": backbone,
        "backbone_digest": backbone_digest,
        "dataset": dataset,
        "resize": "squash",
        "input_size": 16,
    }
    if single_file:
        write_feature_set(layout.feature_set(name), rows, source, d, "float32", attrs, keys=keys)
    else:
        commit_rows(
            layout.feature_set(name), rows, keys, source, {**attrs, "n_features": d, "dtype": "float32"}, None
        )
    source.close()
    src.unlink()
    return layout.feature_set(name)


def as_single_file(layout, name: str) -> Path:
    """Turn the one-shard sharded set `name` into the single-file layout of earlier versions
    (attributes in the file, a `.sha256` beside it); return the file's path."""
    import hashlib
    import json
    import shutil

    import h5py

    folder = layout.features / name
    manifest = json.loads((folder / (folder / "CURRENT").read_text().strip()).read_text())
    (shard,) = manifest["shards"]
    path = layout.feature_set(name)
    shutil.copyfile(folder / shard["file"], path)
    with h5py.File(path, "a") as f:
        for k, v in manifest["attrs"].items():
            f.attrs[k] = json.dumps(v) if isinstance(v, (dict, list)) else v
    shutil.rmtree(folder)
    path.with_name(path.name + ".sha256").write_text(hashlib.sha256(path.read_bytes()).hexdigest() + "\n")
    return path


def blobs(n_per_class: int = 30, n_classes: int = 3, n_features: int = 12, seed: int = 0):
    """Separable Gaussian blobs: (X (n, d) float32, labels (n,) int)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, (n_classes, n_features))
    labels = np.repeat(np.arange(n_classes), n_per_class)
    X = centres[labels] + rng.normal(0, 1, (len(labels), n_features))
    return X.astype(np.float32), labels


def write_runs_store(root: Path, runs: list[dict], heads: dict[str, dict] | None = None) -> Path:
    """Write a store holding the run log `runs` and head folders `heads` (id -> meta.json
    content, with a card.md); for report tests that need known numbers. Return `root`."""
    import json

    (root / "heads").mkdir(parents=True, exist_ok=True)
    for head_id, meta in (heads or {}).items():
        folder = root / "heads" / head_id
        folder.mkdir()
        (folder / "meta.json").write_text(json.dumps({"head_id": head_id, **meta}))
        (folder / "card.md").write_text(f"# Model card: {head_id}\n")
    with open(root / "runs.jsonl", "w") as f:
        for run in runs:
            f.write(json.dumps(run) + "\n")
    return root


@pytest.fixture(scope="session")
def scoring_store(tmp_path_factory, tiny_onnx):
    """A store with photos@tiny (3 classes, 15 JPEGs each) and a logistic head `logi` on it.

    Returns (store root, photos folder). Tests that write into the store copy it first
    (`copy_store`)."""
    from featstore import Store

    root = tmp_path_factory.mktemp("scoring")
    photos = make_class_folders(root / "photos", classes=("cat", "dog", "eel"), n_per_class=15)
    store = root / "store"
    s = Store(store, emissions=False)
    s.extract(photos, str(tiny_onnx))
    s.fit_head("logistic", "photos@tiny", name="logi")
    return store, photos


def copy_store(src: Path, dst: Path) -> Path:
    """Copy a store root (for tests that change it); return the copy."""
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray cluster with 2 CPUs, started once for the whole test session."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


FINETUNE_CLASSES = ("cat", "dog", "eel")


@pytest.fixture(scope="session")
def finetune_data(tmp_path_factory) -> Path:
    """Three class folders of eight real JPEGs each, for fine-tune runs."""
    return make_class_folders(tmp_path_factory.mktemp("ftdata") / "pets", FINETUNE_CLASSES, n_per_class=8)


@pytest.fixture(scope="session")
def scratch_run(tmp_path_factory, finetune_data) -> tuple[Path, str]:
    """A store holding one finished run: simple-cnn from scratch, 32 px, 2 epochs. Read only:
    copy the store (`copy_store`) before writing to it."""
    from featstore import Store

    store = tmp_path_factory.mktemp("ftstore") / "store"
    Store(store).finetune(finetune_data, "simple-cnn", name="pets-cnn", input_size=32, epochs=2)
    return store, "pets-cnn"


def write_bn_keras(path: Path, size_px: int = 32, seed: int = 0) -> Path:
    """Write a tiny "pretrained" Keras backbone with BatchNormalization (non-trivial moving
    statistics): (N, S, S, 3) float pixels -> conv a -> BN -> ReLU -> conv b -> BN -> ReLU (4-D)."""
    import keras

    keras.utils.set_random_seed(seed)
    L = keras.layers
    inputs = keras.Input((size_px, size_px, 3))
    x = L.Rescaling(1 / 127.5, offset=-1.0, name="scale")(inputs)
    for name in ("a", "b"):
        x = L.Conv2D(8, 3, padding="same", name=f"conv_{name}")(x)
        x = L.BatchNormalization(name=f"bn_{name}")(x)
        x = L.ReLU(name=f"relu_{name}")(x)
    model = keras.Model(inputs, x, name="tiny_bn")
    rng = np.random.default_rng(seed)
    for name in ("a", "b"):
        bn = model.get_layer(f"bn_{name}")
        gamma, beta, mean, var = bn.get_weights()
        bn.set_weights([gamma, beta, rng.normal(0, 0.3, mean.shape), rng.uniform(0.5, 2.0, var.shape)])
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return path


def via_store(method: str):
    """A call of `featstore.Store(root).<method>` in one step: `store`, `emissions`, `country` (or
    a `job`) open the Store, `log` and `progress` make its reporter, the rest go to the method."""

    def call(*args, store=None, emissions=True, country=None, job=None, log=None, progress=None, **kw):
        from featstore import Store
        from featstore.reporter import Reporter

        if job is not None:
            store, emissions, country = job.store, job.emissions, job.country
        reporter = Reporter(**{k: v for k, v in (("log", log), ("progress", progress)) if v is not None})
        return getattr(Store(store, emissions=emissions, country=country, reporter=reporter), method)(
            *args, **kw
        )

    return call
