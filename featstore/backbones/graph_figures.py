"""Figures of an ONNX network counted from its graph: parameters (initializer values) and
floating-point operations per image (convolutions and matrix products, 2 per multiply-add, the
shapes from ONNX shape inference at batch 1)."""

from __future__ import annotations

import numpy as np


def n_params(model) -> int:
    """Number of values in the model's initializers."""
    return int(sum(int(np.prod(t.dims)) for t in model.graph.initializer))


def _shapes(model) -> dict[str, list[int]]:
    from onnx import shape_inference

    inferred = shape_inference.infer_shapes(model, data_prop=True)
    g = inferred.graph
    shapes = {}
    for info in (*g.input, *g.value_info, *g.output):
        dims = [d.dim_value if d.HasField("dim_value") else None for d in info.type.tensor_type.shape.dim]
        shapes[info.name] = dims
    for t in g.initializer:
        shapes[t.name] = list(t.dims)
    return shapes


def _shapes_at(model, size) -> dict[str, list[int]] | None:
    """The inferred shapes with the input set to (1, H, W, 3) (put back after); None when
    shape inference fails."""
    from featstore.data.options import hw

    dims = model.graph.input[0].type.tensor_type.shape.dim
    saved = [(d.dim_param, d.dim_value) for d in dims]
    for d, v in zip(dims, (1, *hw(size), 3), strict=False):
        d.dim_value = v
    try:
        return _shapes(model)
    except Exception:  # noqa: BLE001 - shape inference fails on some custom graphs
        return None
    finally:
        for d, (param, value) in zip(dims, saved, strict=True):
            if param:
                d.dim_param = param
            else:
                d.dim_value = value


def gflops(model, size) -> float | None:
    """GFLOPs of one image of `size` (a side, or (height, width)) through `model` (a folded
    backbone taking `pixels` (N, H, W, 3)); None when shape inference cannot tell (a model over
    2 GB, unknown shapes). The input's batch is set to 1 for the count and put back."""
    if model.ByteSize() > 1_800_000_000:
        return None
    shapes = _shapes_at(model, size)
    if shapes is None:
        return None
    total = 0
    for node in model.graph.node:
        out = shapes.get(node.output[0]) if node.output else None
        if not out or None in out:
            continue
        if node.op_type == "Conv" and len(node.input) > 1:
            w = shapes.get(node.input[1])
            if not w or None in w:
                return None
            total += 2 * int(np.prod(out)) * int(np.prod(w[1:]))
        elif node.op_type in ("MatMul", "Gemm"):
            a = shapes.get(node.input[0])
            if not a or None in a:
                return None
            k = a[-1] if node.op_type == "MatMul" or not _attr(node, "transA") else a[-2]
            total += 2 * int(np.prod(out)) * int(k)
    return round(total / 1e9, 4)


def _attr(node, name: str) -> int:
    return next((a.i for a in node.attribute if a.name == name), 0)
