"""ONNX graphs of fitted heads: (N, n_features) float32 features -> (N, n_classes) float32
probabilities, whatever the kind.

scikit-learn pipelines go through skl2onnx in float64; knn is written here (skl2onnx ignores
distance weights); dense through tf2onnx.
"""

from __future__ import annotations

import warnings

import numpy as np

from featstore.deps import require
from featstore.errors import ExportError
from featstore.heads.registry import HeadKind, find_head_kind, get_head_kind

# ---------------------------------------------------------------- graph plumbing


def real_inputs(graph) -> list:
    """The inputs of `graph` that are not initializers."""
    inits = {t.name for t in graph.initializer}
    return [i for i in graph.input if i.name not in inits]


def rewire(nodes, old: str, new: str) -> None:
    """Make every node of `nodes` that reads `old` read `new`."""
    for node in nodes:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new


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


def chain(parts: list, opset: int):
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
        (inp,) = real_inputs(g)
        if prev is None:
            first_in = inp
        else:
            rewire(g.node, inp.name, prev)
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


def _to_double(n_features: int, opset: int):
    from onnx import TensorProto

    return _cast(n_features, TensorProto.DOUBLE, TensorProto.FLOAT, opset)


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


def _calibration(head, n: int, opset: int):
    """(N, n) float32 probabilities -> (N, n) float32 through `head`'s fitted calibration map
    (temperature or sigmoid; ExportError for isotonic)."""
    from onnx import TensorProto, helper, numpy_helper

    def const(value, name):
        return numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)

    f = TensorProto.FLOAT
    if head.method == "temperature":
        nodes = [
            helper.make_node("Max", ["x", "eps"], ["p"]),
            helper.make_node("Log", ["p"], ["lp"]),
            helper.make_node("Mul", ["lp", "inv_t"], ["z"]),
            helper.make_node("Softmax", ["z"], ["y"], axis=1),
        ]
        inits = [const(1e-7, "eps"), const(1.0 / head.temperature_, "inv_t")]
        return _pipe_model(nodes, inits, "x", "y", n, n, f, f, opset)
    if head.method != "sigmoid":
        raise ExportError(
            f"{head.method} calibration has no ONNX conversion; calibrate with sigmoid or temperature to export"
        )
    nodes = [
        helper.make_node("Max", ["x", "eps"], ["p0"]),
        helper.make_node("Min", ["p0", "top"], ["p"]),
        helper.make_node("Sub", ["one", "p"], ["q"]),
        helper.make_node("Log", ["p"], ["lp"]),
        helper.make_node("Log", ["q"], ["lq"]),
        helper.make_node("Sub", ["lp", "lq"], ["logit"]),
        helper.make_node("Mul", ["logit", "a"], ["s0"]),
        helper.make_node("Add", ["s0", "b"], ["s"]),
        helper.make_node("Sigmoid", ["s"], ["r"]),
        helper.make_node("MatMul", ["r", "ones"], ["total"]),
        helper.make_node("Div", ["r", "total"], ["y"]),
    ]
    inits = [
        const(1e-7, "eps"), const(1 - 1e-7, "top"), const(1.0, "one"), const(head.a_, "a"),
        const(head.b_, "b"), const(np.ones((n, 1)), "ones"),
    ]  # fmt: skip
    return _pipe_model(nodes, inits, "x", "y", n, n, f, f, opset)


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


def _steps(pipeline) -> list:
    """The steps of a scikit-learn pipeline that do something (no passthrough)."""
    return [s for _, s in pipeline.steps if s not in ("passthrough", None)]


def _as_pipeline(steps: list):
    from sklearn.pipeline import Pipeline

    return steps[0] if len(steps) == 1 else Pipeline([(str(i), s) for i, s in enumerate(steps)])


# ---------------------------------------------------------------- converters of the kinds


def sklearn_graph(pipeline, n_features: int, opset: int):
    """A scikit-learn pipeline converted by skl2onnx: (N, n_features) float32 -> float64 probabilities."""
    steps = _steps(pipeline)
    try:
        model = _skl2onnx_convert(_as_pipeline(steps), n_features, True, opset)
    except Exception as err:  # noqa: BLE001 - skl2onnx raises many types
        raise ExportError(f"skl2onnx cannot convert this head ({type(steps[-1]).__name__}): {err}") from err
    return chain([_to_double(n_features, opset), model], opset), np.float64


def knn_graph(pipeline, n_features: int, opset: int):
    """featstore's k-NN pipeline (optional scaler, cosine k-NN, 1/distance weights): float64 probabilities."""
    steps = _steps(pipeline)
    parts = [_to_double(n_features, opset)]
    if len(steps) > 1:
        parts.append(_skl2onnx_convert(_as_pipeline(steps[:-1]), n_features, True, opset))
    parts.append(_knn_model(steps[-1], n_features, opset))
    return chain(parts, opset), np.float64


def dense_graph(dense, n_features: int, opset: int):
    """The dense head: its scaler (skl2onnx) and Keras network (tf2onnx); float32 probabilities."""
    parts = []
    if dense.scaler_ != "passthrough":
        parts.append(_skl2onnx_convert(dense.scaler_, n_features, False, opset))
    tf = require("tensorflow", extra=None)
    tf2onnx = require("tf2onnx")
    spec = [tf.TensorSpec((None, n_features), tf.float32, name="x")]
    try:
        proto, _ = tf2onnx.convert.from_keras(dense.model_, input_signature=spec, opset=opset)
    except Exception as err:  # noqa: BLE001 - tf2onnx raises many types
        raise ExportError(f"tf2onnx could not convert the dense head: {err}") from err
    return chain([*parts, proto], opset), np.float32


def _knn_constants(knn, n_features: int) -> dict:
    train = np.asarray(knn._fit_X, dtype=np.float64)
    norms = np.linalg.norm(train, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    n_classes = len(knn.classes_)
    k = min(int(knn.n_neighbors), len(train))
    return {
        "tn_t": (train / norms).T,
        "ones_d": np.ones((n_features, 1)),
        "ones_k": np.ones((k, 1)),
        "ones_c": np.ones((n_classes, 1)),
        "onehot": np.eye(n_classes)[np.asarray(knn._y).reshape(-1)],
        "tiny": np.array(np.finfo(np.float64).tiny),
        "zero": np.array(0.0),
        "one": np.array(1.0),
        "k": np.array([k], dtype=np.int64),
        "shape_w": np.array([0, 1, k], dtype=np.int64),
        "shape_p": np.array([-1, n_classes], dtype=np.int64),
    }


def _knn_model(knn, n_features: int, opset: int):
    """k-NN with cosine distance and 1/distance weights, as scikit-learn computes its probabilities:
    (N, D) float64 -> (N, len(classes_)) float64. A neighbour at distance 0 takes all the weight."""
    from onnx import TensorProto, helper, numpy_helper

    if knn.metric != "cosine" or knn.weights != "distance":
        raise ExportError(
            f"the k-NN head uses metric {knn.metric!r} and weights {knn.weights!r}; export handles "
            "featstore's cosine, distance-weighted k-NN only"
        )
    inits = [numpy_helper.from_array(v, name) for name, v in _knn_constants(knn, n_features).items()]
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
    n_classes = len(knn.classes_)
    return _pipe_model(nodes, inits, "x", "proba", n_features, n_classes, D, D, opset)


# ---------------------------------------------------------------- any head


def _kind_for(estimator, kind: str | None) -> HeadKind:
    if kind is not None:
        from featstore.errors import HeadError

        try:
            return get_head_kind(kind)
        except HeadError:
            pass  # a kind this process has not registered: the estimator may still tell
    spec = find_head_kind(estimator)
    if spec is None:
        raise ExportError(f"heads of type {type(estimator).__name__} cannot be exported")
    return spec


def head_model(estimator, n_features: int, n_classes: int, opset: int = 17, kind: str | None = None):
    """Return the ONNX graph of a fitted head: (N, n_features) float32 -> (N, n_classes) float32.

    `estimator.classes_` are the class indices its columns stand for; `kind` is its meta.json
    `config.kind` (None: the registered kind that owns it). ExportError for a kind without a
    conversion, or options the conversion cannot handle.
    """
    from onnx import TensorProto

    from featstore.heads.calibration import CalibratedHead

    if isinstance(estimator, CalibratedHead):
        inner = head_model(estimator.head, n_features, n_classes, opset, kind=kind)
        return chain([inner, _calibration(estimator, n_classes, opset)], opset)
    spec = _kind_for(estimator, kind)
    if spec.to_onnx is None:
        raise ExportError(f"{spec.name} heads have no ONNX conversion, so they cannot be exported")
    model, dtype = spec.to_onnx(estimator, n_features, opset)
    parts = [model]
    classes = list(np.asarray(estimator.classes_, dtype=int))
    if classes != list(range(n_classes)):
        parts.append(_column_map(classes, n_classes, dtype, opset))
    if dtype == np.float64:
        parts.append(_cast(n_classes, TensorProto.FLOAT, TensorProto.DOUBLE, opset))
    return chain(parts, opset)
