"""Backbones added by name (`featstore backbones add NAME --from FILE`): a user's ONNX or Keras
network, kept in the store (`backbones/added/NAME/`) with its preprocessing, output and pooling,
so a name means the same network for everyone using that store.

At `add` the network runs twice on a few images, as given with the preprocessing done by hand
and as the folded graph extraction runs; below `MIN_COSINE` it is refused. The card
(`card.json`) records the figures; the folded export is made by the `added` source.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from featstore.backbones import graph_figures
from featstore.backbones.options import AddOptions
from featstore.backbones.preprocessing import Preprocessing
from featstore.errors import FeatstoreError, InvalidOptionError, UnknownBackboneError
from featstore.files import sha256_file, write_json
from featstore.options import Record
from featstore.reporter import SILENT, Reporter
from featstore.store.layout import StoreLayout, resolve_store

#: Least cosine between the folded graph's features and the by-hand ones, on every check image.
MIN_COSINE = 0.999
N_CHECK_IMAGES = 4
CARD = "card.json"
NETWORK = "network.onnx"
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")


@dataclass(frozen=True)
class AddedBackbone(Record):
    """One added backbone's card: its `name`, the `kind` of file it came from (onnx, keras),
    the `original` path and its `sha256`, the stored `network` (ONNX, float input), its input
    (`input_size` px high, `input_width` when not square, `layout`, `dtype`), `preprocessing`, `output` and its `output_shape`,
    `pooling`, `n_features`, `n_params`, GFLOPs per image, the check's least `cosine` and when
    it was `created`."""

    name: str
    kind: str
    original: str
    sha256: str
    network: str
    input_size: int
    input_width: int | None
    layout: str
    dtype: str
    preprocessing: dict
    output: str
    output_shape: list
    pooling: str
    n_features: int
    n_params: int
    gflops: float | None
    cosine: float
    created: str

    @property
    def size(self):
        """The input size: a side, or (height, width)."""
        return self.input_size if self.input_width is None else (self.input_size, self.input_width)

    @property
    def spec(self) -> Preprocessing:
        """The preprocessing as an object."""
        return Preprocessing.from_dict(self.preprocessing)

    @classmethod
    def from_dict(cls, data: dict) -> AddedBackbone:
        """Inverse of `to_dict`."""
        return cls(**{"input_width": None, **data})


def added_dir(layout: StoreLayout) -> Path:
    """The folder of added backbones in a store."""
    return layout.backbones / "added"


def find_added(layout: StoreLayout, name: str) -> AddedBackbone | None:
    """The card of the backbone added as `name`, or None."""
    path = added_dir(layout) / name / CARD
    if "/" in name or name.startswith(".") or not path.is_file():
        return None
    return AddedBackbone.from_dict(json.loads(path.read_text()))


def added_backbones(store: StoreLayout | str | None = None) -> list[AddedBackbone]:
    """Every backbone added to the store, by name."""
    layout = resolve_store(store)
    root = added_dir(layout)
    names = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    return [card for n in names if (card := find_added(layout, n)) is not None]


def network_path(layout: StoreLayout, card: AddedBackbone) -> Path:
    """The stored network file of an added backbone."""
    return added_dir(layout) / card.name / card.network


def _check_name(name: str, layout: StoreLayout, replace_: bool) -> None:
    from featstore.backbones.applications import get_backbone

    if not name or not all(c.isalnum() or c in "_-." for c in name) or name[0] in ".-":
        raise InvalidOptionError("name", f"{name!r}: use letters, digits, _, - and . (not first)")
    try:
        get_backbone(name)
    except UnknownBackboneError:
        pass
    else:
        raise InvalidOptionError("name", f"{name!r} is a Keras application's name; choose another")
    if find_added(layout, name) is not None and not replace_:
        raise InvalidOptionError(
            "name", f"a backbone {name!r} is already added; remove it first or replace it"
        )


def check_pixels(size, n: int = N_CHECK_IMAGES) -> np.ndarray:
    """`n` deterministic photo-like uint8 images (gradients, shapes, noise), (n, H, W, 3) for
    `size` a side or (height, width)."""
    from featstore.data.options import hw

    h, w = hw(size)
    rng = np.random.default_rng(20)
    yy, xx = np.mgrid[0:h, 0:w] / max(max(h, w) - 1, 1)
    images = []
    for i in range(n):
        base = np.stack([xx, yy, (xx + yy) / 2][i % 3 :] + [xx, yy, (xx + yy) / 2][: i % 3], -1) * 255
        disc = ((xx - 0.5) ** 2 + (yy - 0.4) ** 2 < 0.05 + 0.02 * i)[..., None] * rng.integers(0, 255, 3)
        noise = rng.normal(0, 12, (h, w, 3))
        images.append(np.clip(0.6 * base + 0.4 * disc + noise, 0, 255))
    return np.stack(images).astype(np.uint8)


def _keras_network(path: Path, trust: bool, out: Path) -> tuple[object, Path]:
    """Load a Keras file (safe mode unless `trust`) and convert it to ONNX at `out` (float NHWC
    input); return (the Keras model, `out`)."""
    from featstore.deps import require

    keras = require("keras")
    try:
        model = keras.models.load_model(path, compile=False, safe_mode=not trust)
    except ValueError as err:
        if "safe_mode" in str(err) or "lambda" in str(err).lower():
            raise UnknownBackboneError(
                f"{path} runs code from the file when loaded (a Lambda layer or custom code); "
                "add it with --trust only if you trust its author"
            ) from err
        raise UnknownBackboneError(f"{path} is not a Keras model Keras can load: {err}") from err
    except (OSError, TypeError, KeyError) as err:
        raise UnknownBackboneError(f"{path} is not a Keras model Keras can load: {err}") from err
    tf, tf2onnx = require("tensorflow"), require("tf2onnx")
    shape = tuple(model.inputs[0].shape)
    spec = [tf.TensorSpec((None, *shape[1:]), tf.float32, name="input")]
    try:
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=17)
    except Exception as err:  # noqa: BLE001 - tf2onnx raises many types
        raise UnknownBackboneError(f"tf2onnx could not convert {path}: {err}") from err
    out.write_bytes(proto.SerializeToString())
    return model, out


def _run_network(path: Path, sig, output: str, x: np.ndarray) -> np.ndarray:
    """The raw `output` of the network as given, on ONNX Runtime's CPU provider."""
    from featstore.deps import require

    ort = require("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run([output], {sig.input: x})[0])


def add_backbone(
    name: str,
    source: str | Path,
    options: AddOptions = AddOptions(),
    *,
    store: StoreLayout | str | None = None,
    reporter: Reporter = SILENT,
) -> AddedBackbone:
    """Add the network in `source` (.onnx, .keras or .h5) to the store as backbone `name`.

    Its preprocessing must be said (`options`: a preset, a config file or a mean and std);
    the network runs on a few images as given (preprocessing by hand) and as folded with its
    pooling; the least cosine must reach `MIN_COSINE`. Returns the card; `--backbone name`
    then works wherever a Keras application's name does. InvalidOptionError for a bad name or
    option, UnknownBackboneError for a file that is not such a network, ExportError when the
    folded graph disagrees.
    """
    opts = options.check()
    layout = resolve_store(store)
    _check_name(name, layout, opts.replace)
    path = Path(source).expanduser()
    if not path.exists():
        raise UnknownBackboneError(f"backbone file {path} does not exist")
    spec = opts.preprocessing()
    if spec is None:
        raise InvalidOptionError(
            "preprocess",
            f"featstore cannot know what {path.name} expects of its pixels; say it with --preprocess "
            "tf|caffe|torch|none, --config (a Hugging Face or timm config file) or --mean and --std",
        )
    kind = "keras" if path.suffix.lower() in KERAS_SUFFIXES else "onnx"
    if kind == "onnx" and path.suffix.lower() != ".onnx":
        raise UnknownBackboneError(f"{path} is neither an ONNX (.onnx) nor a Keras (.keras, .h5) file")
    reporter.log(f"adding {path.name} as {name}")
    staging = added_dir(layout) / f".{name}.adding"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        keras_model = None
        if kind == "keras":
            keras_model, network = _keras_network(path, opts.trust, staging / NETWORK)
        else:
            network = path
        card = _check(name, kind, path, network, spec, opts, keras_model)
        if kind == "onnx":
            _store_network(path, staging / NETWORK)
        else:
            shutil.copy2(path, staging / path.name)
        write_json(staging / CARD, card.to_dict(), indent=2)
        final = added_dir(layout) / name
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    reporter.log(f"{name}: {card.n_features} features, least cosine {card.cosine:.6f} against by hand")
    _export(card, layout, reporter)
    return card


def _store_network(path: Path, dest: Path) -> None:
    """Put the ONNX file `path` in the store at `dest`: copied as it is, or, when its weights sit
    in external data files, as one file (their data beside it as `<dest>.data` over 2 GB)."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    header = onnx.load(str(path), load_external_data=False)
    if not any(uses_external_data(t) for t in header.graph.initializer):
        shutil.copy2(path, dest)
        return
    model = onnx.load(str(path))
    large = model.ByteSize() > 1_800_000_000
    onnx.save(model, str(dest), save_as_external_data=large, location=dest.name + ".data")


def _check(name, kind, path, network, spec, opts, keras_model) -> AddedBackbone:
    """Run the network by hand and folded; return the card or raise."""
    import onnx

    from featstore.backbones import folding
    from featstore.data.options import hw, size_text

    model = onnx.load(str(network))
    sig = folding.signature(model, spec.layout)
    size = sig.size or spec.size
    if spec.size and sig.size and hw(spec.size) != hw(sig.size):
        raise InvalidOptionError(
            "input_size", f"{path.name} takes {size_text(sig.size)} px images, not {size_text(spec.size)} px"
        )
    if size is None:
        raise InvalidOptionError("input_size", f"{path.name} takes any size; give one (--input-size)")
    output = folding.choose_output(sig, opts.output)
    h, w = hw(size)
    spec = replace(spec, layout=sig.layout, input_size=h, input_width=None if w == h else w)
    pixels = check_pixels(size)
    x = folding.by_hand(pixels, spec, sig)
    if keras_model is not None:
        raw = np.asarray(keras_model(x, training=False))
    else:
        raw = _run_network(network, sig, output, x)
    folding.check_pooling(raw.shape, opts.pooling)
    want = folding.pool_by_hand(raw, opts.pooling, sig.layout)
    params = graph_figures.n_params(model)
    folded = folding.fold(model, spec, sig, output, raw.shape, opts.pooling)
    got = _run_folded(folded)(pixels)
    cosine = _least_cosine(got, want)
    if not cosine >= MIN_COSINE:
        raise FeatstoreError(
            f"{path.name} folded with its preprocessing gives features of cosine {cosine:.4f} to the "
            f"network's own (at least {MIN_COSINE} needed); refusing it"
        )
    return AddedBackbone(
        name=name, kind=kind, original=str(path.absolute()), sha256=sha256_file(path), network=NETWORK,
        input_size=h, input_width=None if w == h else w, layout=sig.layout, dtype=sig.dtype, preprocessing=spec.to_dict(), output=output,
        output_shape=[None, *raw.shape[1:]], pooling=opts.pooling, n_features=int(got.shape[1]),
        n_params=params, gflops=graph_figures.gflops(folded, size), cosine=round(float(cosine), 6),
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )  # fmt: skip


def _run_folded(model):
    from featstore.inference.runtimes import open_model, reference_runtime

    return open_model(model.SerializeToString(), reference_runtime()).run


def _least_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64).reshape(a.shape)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    both_zero = (np.linalg.norm(a, axis=1) == 0) & (np.linalg.norm(b, axis=1) == 0)
    cos = np.where(both_zero, 1.0, (a * b).sum(1) / np.maximum(norms, 1e-30))
    return float(cos.min())


def folded_network(card: AddedBackbone, layout: StoreLayout):
    """The stored network of `card` folded with its preprocessing and pooling (an ONNX model)."""
    import onnx

    from featstore.backbones import folding

    model = onnx.load(str(network_path(layout, card)))
    sig = folding.signature(model, card.layout)
    return folding.fold(model, card.spec, sig, card.output, tuple(card.output_shape), card.pooling)


def _export(card: AddedBackbone, layout: StoreLayout, reporter: Reporter) -> None:
    from featstore.backbones.export import ensure_backbone
    from featstore.backbones.options import BackboneOptions
    from featstore.backbones.recipes import resolve_recipe

    ensure_backbone(resolve_recipe(BackboneOptions(card.name), layout=layout), layout, reporter)


def remove_backbone(name: str, store: StoreLayout | str | None = None) -> AddedBackbone:
    """Remove the backbone added as `name` (its stored network and card; the features and heads
    made with it stay). UnknownBackboneError when there is none."""
    layout = resolve_store(store)
    card = find_added(layout, name)
    if card is None:
        names = ", ".join(c.name for c in added_backbones(layout)) or "none"
        raise UnknownBackboneError(f"no backbone {name!r} was added to this store; added: {names}")
    shutil.rmtree(added_dir(layout) / name)
    return card
