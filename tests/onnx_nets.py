"""Tiny networks as PyTorch, timm and Optimum export them, built with `onnx.helper`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def build_net(
    path: Path,
    *,
    layout: str = "nchw",
    dtype: str = "float32",
    size: int = 16,
    width: int | None = None,
    dynamic: bool = False,
    outputs: tuple[str, ...] = ("pooled",),
    n: int = 8,
    seed: int = 0,
    input_name: str = "pixel_values",
    external: bool = False,
) -> Path:
    """Write a network taking (N, 3, S, S) (or NHWC) float pixels: conv 3x3 -> relu, then the
    `outputs` asked for: `pooled` (N, n), `spatial` (N, n, S, S), `tokens` (N, S*S, n). `width`
    makes the input `size` x `width`; `dynamic` leaves the size free; `external` keeps the weights
    in a data file beside it."""
    rng = np.random.default_rng(seed)
    np_dtype = np.float16 if dtype == "float16" else np.float32
    elem = TensorProto.FLOAT16 if dtype == "float16" else TensorProto.FLOAT
    w = rng.normal(0, 0.3, (n, 3, 3, 3)).astype(np_dtype)
    b = rng.normal(0, 0.1, (n,)).astype(np_dtype)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")]
    nodes, x = [], input_name
    if layout == "nhwc":
        nodes.append(helper.make_node("Transpose", [x], ["xt"], perm=[0, 3, 1, 2]))
        x = "xt"
    nodes += [
        helper.make_node("Conv", [x, "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["spatial"]),
    ]
    side = None if dynamic else size
    across = None if dynamic else (width or size)
    outs = []
    for name in outputs:
        if name == "pooled":
            nodes += [
                helper.make_node("GlobalAveragePool", ["spatial"], ["p"]),
                helper.make_node("Flatten", ["p"], ["pooled"], axis=1),
            ]
            outs.append(helper.make_tensor_value_info("pooled", elem, ["N", n]))
        elif name == "spatial":
            outs.append(helper.make_tensor_value_info("spatial", elem, ["N", n, side, across]))
        elif name == "tokens":
            inits.append(numpy_helper.from_array(np.array([0, n, -1], np.int64), "shape"))
            nodes += [
                helper.make_node("Reshape", ["spatial", "shape"], ["flat"]),
                helper.make_node("Transpose", ["flat"], ["tokens"], perm=[0, 2, 1]),
            ]
            outs.append(helper.make_tensor_value_info("tokens", elem, ["N", None, n]))
    shape = ["N", 3, side, across] if layout == "nchw" else ["N", side, across, 3]
    inputs = [helper.make_tensor_value_info(input_name, elem, shape)]
    graph = helper.make_graph(nodes, "net", inputs, outs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    if external:
        location = path.name + ".data"
        onnx.save(model, str(path), save_as_external_data=True, location=location, size_threshold=0)
    else:
        onnx.save(model, str(path))
    return path
