"""`featstore export`: one ONNX file, raw uint8 RGB pixels in, class probabilities out.

Owns the graph that joins a head's backbone export(s) from `store/backbones/` and the head:
scikit-learn pipelines (scaler and classifier, the calibrated SVMs included) converted with
skl2onnx, the k-NN head written here (skl2onnx's k-NN converter ignores distance weights),
and dense heads converted with tf2onnx. scikit-learn heads run in float64 inside the graph, as
scikit-learn computes them. The file needs onnxruntime only: no featstore, no custom operator.
Class names and the preprocessing go into its metadata. Imports `predictor`; skl2onnx and
(for dense heads) TensorFlow are imported inside the functions that need them.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from featstore.deps import require
from featstore.errors import ExportError, FeatstoreError
from featstore.scoring.predictor import Predictor, load_predictor
from featstore.scoring.tables import check_output
from featstore.store.layout import resolve_store

#: Largest |probability difference| allowed between the exported file and featstore's own scoring.
MAX_PROBA_DIFF = 1e-4
INPUT_NAME = "pixels"
OUTPUT_NAME = "probabilities"
#: The lowest ONNX opset the head graphs are written for.
MIN_OPSET = 13


@dataclass
class DeployResult:
    """One exported classifier file and how well it agrees with featstore's scoring."""

    head_id: str
    path: str
    class_names: list[str]
    input_size: int
    resize: str
    backbones: list[str]
    opset: int
    size_mb: float
    max_abs_diff: float
    seconds: float

    def to_dict(self) -> dict:
        """Return a JSON-ready dict."""
        return asdict(self)


# ---------------------------------------------------------------- graph surgery


def _onnx():
    import onnx

    return onnx


def _default_opset(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _real_inputs(graph) -> list:
    inits = {t.name for t in graph.initializer}
    return [i for i in graph.input if i.name not in inits]


def _rewire(nodes, old: str, new: str) -> None:
    for node in nodes:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new


def compose(stages: list, head, class_names: list[str], input_size: int, metadata: dict):
    """Join backbone models `stages` (each pixels -> (N, D_i)) and `head` ((N, sum D_i) float32 ->
    (N, C) float32) into one model: `pixels` (N, S, S, 3) uint8 -> `probabilities` (N, C) float32.
    """
    onnx = _onnx()
    from onnx import TensorProto, helper
    from onnx.compose import add_prefix

    nodes, inits, functions, feats = [], [], [], []
    opsets: dict[str, int] = {}
    ir = 3
    for i, model in enumerate([*stages, head]):
        for o in model.opset_import:
            domain = "" if o.domain == "ai.onnx" else o.domain
            opsets[domain] = max(opsets.get(domain, 0), o.version)
        ir = max(ir, model.ir_version)
        prefix = f"backbone{i}/" if i < len(stages) else "head/"
        m = add_prefix(model, prefix)
        g = m.graph
        (inp,) = _real_inputs(g)
        out = g.output[0].name
        if i < len(stages):
            elem = inp.type.tensor_type.elem_type
            if elem == TensorProto.UINT8:
                nodes.append(helper.make_node("Identity", [INPUT_NAME], [inp.name], name=f"{prefix}input"))
            else:
                nodes.append(
                    helper.make_node("Cast", [INPUT_NAME], [inp.name], name=f"{prefix}input", to=elem)
                )
            rank = len(g.output[0].type.tensor_type.shape.dim)
            if rank != 2:
                nodes.append(helper.make_node("Flatten", [out], [f"{out}/2d"], axis=1))
                out = f"{out}/2d"
            feats.append(out)
        else:
            joined = "features"
            if len(feats) == 1:
                nodes.append(helper.make_node("Identity", feats, [joined], name="features"))
            else:
                nodes.append(helper.make_node("Concat", feats, [joined], name="features", axis=1))
            _rewire(g.node, inp.name, joined)
            nodes.extend(g.node)
            nodes.append(helper.make_node("Identity", [out], [OUTPUT_NAME], name=OUTPUT_NAME))
            inits.extend(g.initializer)
            functions.extend(m.functions)
            continue
        nodes.extend(g.node)
        inits.extend(g.initializer)
        functions.extend(m.functions)
    graph = helper.make_graph(
        nodes,
        "featstore_classifier",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, ["n", input_size, input_size, 3])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["n", len(class_names)])],
        initializer=inits,
    )
    used = {n.domain for n in nodes} | {""}  # an int8 model declares domains it never uses
    imports = [helper.make_opsetid(d, v) for d, v in sorted(opsets.items()) if d in used]
    model = helper.make_model(graph, opset_imports=imports, functions=functions, producer_name="featstore")
    model.ir_version = max(ir, helper.find_min_ir_version_for(imports, ignore_unknown=True))
    model.doc_string = (
        f"{metadata.get('head_id')}: (N, {input_size}, {input_size}, 3) uint8 RGB pixels resized by "
        f"{metadata.get('resize')!r} -> (N, {len(class_names)}) class probabilities; classes in metadata"
    )
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key = key
        entry.value = value if isinstance(value, str) else json.dumps(value)
    onnx.checker.check_model(model)
    return model


def _pipe_model(nodes, inits, inp: str, out: str, n_in, n_out, in_type, out_type, opset: int):
    from onnx import helper

    graph = helper.make_graph(
        nodes,
        "part",
        [helper.make_tensor_value_info(inp, in_type, ["n", n_in])],
        [helper.make_tensor_value_info(out, out_type, ["n", n_out])],
        initializer=inits,
    )
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = helper.find_min_ir_version_for(opsets)
    return model


def _chain(parts: list, opset: int):
    """Join single-input, single-output models in order into one model."""
    from onnx import helper
    from onnx.compose import add_prefix

    nodes, inits, opsets = [], [], {"": opset}
    ir = 3
    prev = None
    first_in = last_out = None
    for i, part in enumerate(parts):
        m = add_prefix(part, f"p{i}/")
        g = m.graph
        (inp,) = _real_inputs(g)
        if prev is None:
            first_in = inp
        else:
            _rewire(g.node, inp.name, prev)
        nodes.extend(g.node)
        inits.extend(g.initializer)
        prev = g.output[0].name
        last_out = g.output[0]
        ir = max(ir, part.ir_version)
        for o in part.opset_import:
            d = "" if o.domain == "ai.onnx" else o.domain
            opsets[d] = max(opsets.get(d, 0), o.version)
    graph = helper.make_graph(nodes, "head", [first_in], [last_out], initializer=inits)
    imports = [helper.make_opsetid(d, v) for d, v in opsets.items()]
    model = helper.make_model(graph, opset_imports=imports)
    model.ir_version = max(ir, helper.find_min_ir_version_for(imports, ignore_unknown=True))
    return model


def _cast(n, to_type, from_type, opset):
    from onnx import helper

    node = helper.make_node("Cast", ["x"], ["y"], to=to_type)
    return _pipe_model([node], [], "x", "y", n, n, from_type, to_type, opset)


def _column_map(classes, n_classes: int, dtype, opset: int):
    """(N, len(classes)) -> (N, n_classes): each column moved to the class index it stands for."""
    from onnx import TensorProto, helper, numpy_helper

    classes = np.asarray(classes, dtype=int)
    m = np.zeros((len(classes), n_classes), dtype=dtype)
    m[np.arange(len(classes)), classes] = 1
    t = TensorProto.DOUBLE if dtype == np.float64 else TensorProto.FLOAT
    node = helper.make_node("MatMul", ["x", "m"], ["y"])
    return _pipe_model(
        [node], [numpy_helper.from_array(m, "m")], "x", "y", len(classes), n_classes, t, t, opset
    )


def _skl2onnx_convert(estimator, n_features: int, double: bool, opset: int):
    require("skl2onnx", package="skl2onnx")
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType

    tensor = DoubleTensorType if double else FloatTensorType
    options = {id(estimator): {"zipmap": False}} if hasattr(estimator, "predict_proba") else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn deprecation notes on attributes skl2onnx reads
        model = convert_sklearn(
            estimator,
            initial_types=[("x", tensor([None, n_features]))],
            options=options,
            target_opset={"": opset, "ai.onnx.ml": 3},
        )
    outputs = [o.name for o in model.graph.output]
    keep = "probabilities" if "probabilities" in outputs else outputs[-1]
    if keep != model.graph.output[0].name or len(outputs) > 1:
        kept = next(o for o in model.graph.output if o.name == keep)
        del model.graph.output[:]
        model.graph.output.append(kept)
    return model


def _knn_model(knn, n_features: int, opset: int):
    """k-NN with cosine distance and 1/distance weights, as scikit-learn computes its probabilities:
    (N, D) float64 -> (N, len(classes_)) float64. A neighbour at distance 0 takes all the weight."""
    from onnx import TensorProto, helper, numpy_helper

    if knn.metric != "cosine" or knn.weights != "distance":
        raise ExportError(
            f"the k-NN head uses metric {knn.metric!r} and weights {knn.weights!r}; export handles "
            "featstore's cosine, distance-weighted k-NN only"
        )
    train = np.asarray(knn._fit_X, dtype=np.float64)
    norms = np.linalg.norm(train, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    tn_t = (train / norms).T
    n_classes = len(knn.classes_)
    onehot = np.eye(n_classes)[np.asarray(knn._y).reshape(-1)]
    k = min(int(knn.n_neighbors), len(train))
    c = {
        "tn_t": tn_t,
        "ones_d": np.ones((n_features, 1)),
        "ones_k": np.ones((k, 1)),
        "ones_c": np.ones((n_classes, 1)),
        "onehot": onehot,
        "tiny": np.array(np.finfo(np.float64).tiny),
        "zero": np.array(0.0),
        "one": np.array(1.0),
        "k": np.array([k], dtype=np.int64),
        "shape_w": np.array([0, 1, k], dtype=np.int64),
        "shape_p": np.array([-1, n_classes], dtype=np.int64),
    }
    inits = [numpy_helper.from_array(v, name) for name, v in c.items()]
    n = helper.make_node
    nodes = [
        n("Mul", ["x", "x"], ["sq"]),
        n("MatMul", ["sq", "ones_d"], ["sumsq"]),
        n("Sqrt", ["sumsq"], ["qnorm"]),
        n("Equal", ["qnorm", "zero"], ["qzero"]),
        n("Where", ["qzero", "one", "qnorm"], ["qdiv"]),
        n("Div", ["x", "qdiv"], ["xn"]),
        n("MatMul", ["xn", "tn_t"], ["sim"]),
        n("Sub", ["one", "sim"], ["dist_raw"]),
        n("Max", ["dist_raw", "zero"], ["dist"]),
        n("TopK", ["dist", "k"], ["nd", "ni"], largest=0, sorted=1),
        n("Equal", ["nd", "zero"], ["is0"]),
        n("Cast", ["is0"], ["is0f"], to=TensorProto.DOUBLE),
        n("MatMul", ["is0f", "ones_k"], ["n0"]),
        n("Greater", ["n0", "zero"], ["any0"]),
        n("Max", ["nd", "tiny"], ["nd_safe"]),
        n("Div", ["one", "nd_safe"], ["inv"]),
        n("Where", ["any0", "is0f", "inv"], ["w"]),
        n("Gather", ["onehot", "ni"], ["nclass"], axis=0),
        n("Reshape", ["w", "shape_w"], ["w3"]),
        n("MatMul", ["w3", "nclass"], ["votes3"]),
        n("Reshape", ["votes3", "shape_p"], ["votes"]),
        n("MatMul", ["votes", "ones_c"], ["total"]),
        n("Div", ["votes", "total"], ["proba"]),
    ]
    D = TensorProto.DOUBLE
    return _pipe_model(nodes, inits, "x", "proba", n_features, n_classes, D, D, opset)


def _dense_model(dense, n_features: int, opset: int):
    tf = require("tensorflow", extra=None)
    tf2onnx = require("tf2onnx")
    spec = [tf.TensorSpec((None, n_features), tf.float32, name="x")]
    try:
        proto, _ = tf2onnx.convert.from_keras(dense.model_, input_signature=spec, opset=opset)
    except Exception as err:  # noqa: BLE001 - tf2onnx raises many types
        raise ExportError(f"tf2onnx could not convert the dense head: {err}") from err
    return proto


def head_model(estimator, n_features: int, n_classes: int, opset: int = 17):
    """Return the ONNX graph of a fitted head: (N, n_features) float32 -> (N, n_classes) float32.

    Raises
    ------
    ExportError
        A head kind or option that cannot be converted (the message says which).
    """
    from onnx import TensorProto
    from sklearn.pipeline import Pipeline

    from featstore.heads.kinds import DenseHead

    F, D = TensorProto.FLOAT, TensorProto.DOUBLE
    classes = list(np.asarray(estimator.classes_, dtype=int))
    parts = []
    if isinstance(estimator, DenseHead):
        if estimator.scaler_ != "passthrough":
            parts.append(_skl2onnx_convert(estimator.scaler_, n_features, False, opset))
        parts.append(_dense_model(estimator, n_features, opset))
        dtype = np.float32
    elif isinstance(estimator, Pipeline):
        steps = [s for _, s in estimator.steps if s not in ("passthrough", None)]
        clf = steps[-1]
        parts.append(_cast(n_features, D, F, opset))
        from sklearn.neighbors import KNeighborsClassifier

        if isinstance(clf, KNeighborsClassifier):
            if len(steps) > 1:
                parts.append(
                    _skl2onnx_convert(
                        Pipeline([(str(i), s) for i, s in enumerate(steps[:-1])]), n_features, True, opset
                    )
                )
            parts.append(_knn_model(clf, n_features, opset))
        else:
            model = steps[0] if len(steps) == 1 else Pipeline([(str(i), s) for i, s in enumerate(steps)])
            try:
                parts.append(_skl2onnx_convert(model, n_features, True, opset))
            except Exception as err:  # noqa: BLE001 - skl2onnx raises many types
                raise ExportError(f"skl2onnx cannot convert this head ({type(clf).__name__}): {err}") from err
        dtype = np.float64
    else:
        raise ExportError(f"heads of type {type(estimator).__name__} cannot be exported")
    if classes != list(range(n_classes)):
        parts.append(_column_map(classes, n_classes, dtype, opset))
    if dtype == np.float64:
        parts.append(_cast(n_classes, F, D, opset))
    return _chain(parts, opset)


# ---------------------------------------------------------------- the command


def _backbone_opset(predictor: Predictor) -> tuple[int, list]:
    onnx = _onnx()
    opsets = set()
    models = []
    for stage in predictor.stages:
        model = onnx.load(str(stage.path))
        opsets.add(_default_opset(model))
        models.append(model)
    if len(opsets) != 1:
        raise ExportError(
            f"the backbones of head {predictor.name} use different ONNX opsets ({sorted(opsets)}); "
            "they cannot be joined in one graph"
        )
    opset = opsets.pop()
    if opset < MIN_OPSET:
        raise ExportError(
            f"backbone {predictor.stages[0].label} uses ONNX opset {opset}; export needs {MIN_OPSET} or later"
        )
    return opset, models


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, fsync it and rename it to `path`."""
    from featstore.files import write_atomic as store_write_atomic
    from featstore.store.featuresets import remove_stale_temporaries

    remove_stale_temporaries(path.parent, path.name)
    try:
        store_write_atomic(path, data)
    except OSError as err:
        raise FeatstoreError(f"cannot write {path}: {err.strerror}") from err


def check_pixels(predictor: Predictor, n: int = 6, seed: int = 0) -> np.ndarray:
    """Pixels the export is checked on: (n, S, S, 3) uint8 smooth random images."""
    rng = np.random.default_rng(seed)
    s = predictor.input_size
    low = rng.integers(0, 256, (n, 4, 4, 3)).astype(np.float64)
    idx = np.minimum((np.arange(s) * 4) // s, 3)
    return low[:, idx][:, :, idx].astype(np.uint8)


def featstore_proba(predictor: Predictor, pixels: np.ndarray) -> np.ndarray:
    """Probabilities featstore's scoring gives `pixels` (N, S, S, 3) uint8: (N, C) float64."""
    from featstore.runtime import open_session

    outputs = [open_session(s.path, device="cpu").run(pixels) for s in predictor.stages]
    return predictor.predict_proba(outputs)


def export_head(
    head: str, output: str | os.PathLike, *, store: str | None = None, overwrite: bool = False
) -> DeployResult:
    """Write head `head` and its backbone(s) as one ONNX file at `output`.

    The file maps `pixels` (N, S, S, 3) uint8 RGB, resized as the head's features were (see
    its `resize` metadata), to `probabilities` (N, n_classes) float32, class names in the
    `classes` metadata entry. It is checked against featstore's own scoring on random
    images before it is written (largest difference `MAX_PROBA_DIFF`).

    Raises
    ------
    UnknownHeadError, StoreError
        No such head, or a backbone ONNX file it needs is missing.
    OutputExistsError, FeatstoreError
        The output exists (without `overwrite`) or its folder cannot be written.
    ExportError
        The head cannot be converted, or the file disagrees with featstore's scoring.
    """
    from featstore import __version__
    from featstore.runtime import open_session

    t0 = time.perf_counter()
    path = check_output(output, overwrite, (".onnx",))
    layout = resolve_store(store)
    predictor = load_predictor(layout, head=head)
    opset, backbones = _backbone_opset(predictor)
    n_features = sum(s.n_outputs for s in predictor.stages)
    head_graph = head_model(predictor.estimator, n_features, len(predictor.class_names), opset)
    metadata = {
        "classes": predictor.class_names,
        "head_id": head,
        "kind": predictor.meta.get("config", {}).get("kind"),
        "input_size": str(predictor.input_size),
        "resize": predictor.resize,
        "input": f"pixels: (N, {predictor.input_size}, {predictor.input_size}, 3) uint8 RGB",
        "output": "probabilities: (N, n_classes) float32, columns in the order of `classes`",
        "backbones": [{"label": s.label, "digest": s.digest} for s in predictor.stages],
        "feature_sets": predictor.meta.get("feature_sets", []),
        "featstore_version": __version__,
    }
    model = compose(backbones, head_graph, predictor.class_names, predictor.input_size, metadata)
    data = model.SerializeToString()
    pixels = check_pixels(predictor)
    try:
        got = open_session(data, device="cpu").run(pixels)
    except FeatstoreError as err:
        raise ExportError(f"the exported graph of head {head} does not run: {err}") from err
    want = featstore_proba(predictor, pixels)
    diff = float(np.abs(got - want).max())
    if not np.isfinite(diff) or diff > MAX_PROBA_DIFF:
        raise ExportError(
            f"the exported graph of head {head} differs from featstore's scoring by {diff:.2e} "
            f"(limit {MAX_PROBA_DIFF:.0e}); nothing was written"
        )
    write_atomic(path, data)
    return DeployResult(
        head_id=head,
        path=str(path),
        class_names=predictor.class_names,
        input_size=predictor.input_size,
        resize=predictor.resize,
        backbones=[s.label for s in predictor.stages],
        opset=opset,
        size_mb=round(len(data) / 1e6, 3),
        max_abs_diff=diff,
        seconds=round(time.perf_counter() - t0, 3),
    )
