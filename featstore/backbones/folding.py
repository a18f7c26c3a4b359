"""A user's ONNX network made into a featstore backbone: `fold` puts the preprocessing in front
(uint8 RGB NHWC `pixels` in) and the pooling behind (`features` (N, D) float32 out), with ONNX
operators only, so the stored file runs on every runtime; `by_hand` computes the same features
with numpy around the untouched network, to check the fold against."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from featstore.backbones.preprocessing import Preprocessing
from featstore.data.options import Size, hw
from featstore.errors import InvalidOptionError, UnknownBackboneError

INPUT_NAME = "pixels"
OUTPUT_NAME = "features"
#: Poolings of spatial maps (N, C, H, W) / (N, H, W, C) and of tokens (N, T, D); `avg` of tokens
#: is `mean`, the mean of the patch tokens (all but the first).
SPATIAL_POOLINGS = ("avg", "max", "gem")
TOKEN_POOLINGS = ("cls", "mean", "cls+mean", "avg", "max")
GEM_P = 3.0
GEM_EPS = 1e-6
_DTYPES = {1: "float32", 2: "uint8", 10: "float16"}


@dataclass(frozen=True)
class Signature:
    """What a network takes and gives: its image input's `name`, `dtype` (float32, float16 or
    uint8), `layout` (nhwc, nchw), fixed `size` in px (a side, or (height, width); None:
    dynamic) and its outputs' names."""

    input: str
    dtype: str
    layout: str
    size: Size | None
    outputs: tuple[str, ...]


def signature(model, layout: str | None = None) -> Signature:
    """Read the image input of an ONNX `model`; UnknownBackboneError when it has not exactly one
    4-D float or uint8 input with 3 channels first or last."""
    init = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in init]
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs)
        raise UnknownBackboneError(
            f"the network must have exactly one image input, it has {len(inputs)}: {names}"
        )
    tensor = inputs[0].type.tensor_type
    if tensor.elem_type not in _DTYPES:
        raise UnknownBackboneError(f"its input {inputs[0].name!r} must be float32, float16 or uint8 pixels")
    dims = [d.dim_value or None for d in tensor.shape.dim]
    if len(dims) != 4 or 3 not in (dims[1], dims[3]) and None not in (dims[1], dims[3]):
        raise UnknownBackboneError(
            f"its input must be images (batch, 3, height, width) or (batch, height, width, 3); it is "
            f"{[d.dim_value or d.dim_param or '?' for d in tensor.shape.dim]}"
        )
    found = "nchw" if dims[1] == 3 and dims[3] != 3 else "nhwc" if dims[3] == 3 and dims[1] != 3 else None
    if layout and found and layout != found:
        raise UnknownBackboneError(
            f"its input is {found.upper()}, not {layout.upper()} as the preprocessing says"
        )
    layout = layout or found
    if layout is None:
        raise UnknownBackboneError("cannot tell whether its input is NCHW or NHWC; say it with --layout")
    h, w = (dims[2], dims[3]) if layout == "nchw" else (dims[1], dims[2])
    size = None if not (h and w) else h if h == w else (h, w)
    outputs = tuple(o.name for o in model.graph.output)
    return Signature(inputs[0].name, _DTYPES[tensor.elem_type], layout, size, outputs)


def choose_output(sig: Signature, output: str | None) -> str:
    """The output the features come from: `output`, or the only one; InvalidOptionError otherwise."""
    if output is None and len(sig.outputs) == 1:
        return sig.outputs[0]
    if output in sig.outputs:
        return output
    names = ", ".join(sig.outputs)
    what = "has several outputs" if output is None else f"has no output {output!r}"
    raise InvalidOptionError("output", f"the network {what}; choose one of {names} with --output")


def check_pooling(shape: tuple, pooling: str) -> str:
    """The kind of an output of `shape`: vector, spatial or tokens, with `pooling` checked for it."""
    rank = len(shape)
    shown = "(N, " + ", ".join(map(str, shape[1:])) + ")"
    if rank == 2:
        if pooling != "avg":
            raise InvalidOptionError("pooling", f"the output {shown} is pooled already; leave --pooling out")
        return "vector"
    if rank == 4:
        if pooling not in SPATIAL_POOLINGS:
            raise InvalidOptionError(
                "pooling", f"a spatial map {shown} pools by {', '.join(SPATIAL_POOLINGS)}"
            )
        return "spatial"
    if rank == 3:
        if pooling not in TOKEN_POOLINGS or pooling == "max" and shape[1] < 2:
            raise InvalidOptionError("pooling", f"tokens {shown} pool by {', '.join(TOKEN_POOLINGS[:3])}")
        return "tokens"
    raise UnknownBackboneError(f"its output has shape {shown}; expected (N, D), (N, C, H, W) or (N, T, D)")


def channels_axis(shape: tuple, layout: str) -> int:
    """Axis of the channels of a spatial map: the odd one out of the three, else as the input."""
    _, a, b, c = shape
    if b == c and a != b:
        return 1
    if a == b and c != a:
        return 3
    return 1 if layout == "nchw" else 3


def by_hand(pixels: np.ndarray, spec: Preprocessing, sig: Signature) -> np.ndarray:
    """The network's input for uint8 RGB NHWC `pixels`, computed with numpy."""
    a, b = spec.affine()
    x = pixels.astype(np.float32) * np.float32(a) + np.float32(b)
    if spec.channels == "bgr":
        x = x[..., ::-1]
    if sig.layout == "nchw":
        x = x.transpose(0, 3, 1, 2)
    if sig.dtype == "uint8":
        x = np.clip(np.rint(x), 0, 255)
    return np.ascontiguousarray(x, dtype=sig.dtype)


def pool_by_hand(y: np.ndarray, pooling: str, layout: str) -> np.ndarray:
    """Pool an output as `fold` does, with numpy: (N, ...) -> (N, D) float32."""
    y = np.asarray(y, dtype=np.float32)
    if y.ndim == 4:
        axes = (2, 3) if channels_axis(y.shape, layout) == 1 else (1, 2)
        if pooling == "gem":
            return np.power(np.mean(np.power(np.maximum(y, GEM_EPS), GEM_P), axis=axes), 1 / GEM_P)
        return y.max(axis=axes) if pooling == "max" else y.mean(axis=axes)
    if y.ndim == 3:
        cls, patches = y[:, 0], y[:, 1:]
        if pooling == "max":
            return patches.max(axis=1)
        mean = patches.mean(axis=1)
        return {"cls": cls, "mean": mean, "avg": mean, "cls+mean": np.concatenate([cls, mean], 1)}[pooling]
    return y


def _opset(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)


class _Nodes:
    """Nodes and constants added to a graph, named `featstore_*` so they never clash."""

    def __init__(self, model):
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.opset = _opset(model)
        self.nodes, self.inits, self.n = [], [], 0

    def name(self, stem: str) -> str:
        self.n += 1
        return f"featstore_{stem}_{self.n}"

    def const(self, value, dtype) -> str:
        name = self.name("const")
        self.inits.append(self.numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op: str, inputs: list[str], out: str | None = None, **attrs) -> str:
        out = out or self.name(op.lower())
        self.nodes.append(self.helper.make_node(op, inputs, [out], name=self.name(op), **attrs))
        return out

    def reduce(self, op: str, x: str, axes: list[int]) -> str:
        if self.opset >= 18 or op == "ReduceSum" and self.opset >= 13:
            return self.op(op, [x, self.const(axes, np.int64)], keepdims=0)
        return self.op(op, [x], axes=axes, keepdims=0)


def _pool(g: _Nodes, y: str, shape: tuple, kind: str, pooling: str, layout: str) -> str:
    if kind == "spatial":
        axes = [2, 3] if channels_axis(shape, layout) == 1 else [1, 2]
        if pooling == "gem":
            clipped = g.op("Max", [y, g.const(GEM_EPS, np.float32)])
            powered = g.op("Pow", [clipped, g.const(GEM_P, np.float32)])
            return g.op("Pow", [g.reduce("ReduceMean", powered, axes), g.const(1 / GEM_P, np.float32)])
        return g.reduce("ReduceMax" if pooling == "max" else "ReduceMean", y, axes)
    if kind == "tokens":
        cls = g.op("Gather", [y, g.const(0, np.int64)], axis=1)
        if pooling == "cls":
            return cls
        ends = np.iinfo(np.int64).max
        patches = g.op(
            "Slice", [y, g.const([1], np.int64), g.const([ends], np.int64), g.const([1], np.int64)]
        )
        pooled = g.reduce("ReduceMax" if pooling == "max" else "ReduceMean", patches, [1])
        return g.op("Concat", [cls, pooled], axis=1) if pooling == "cls+mean" else pooled
    return y


def _rename(graph, old: str, new: str) -> None:
    """Rename tensor `old` to `new` wherever the graph mentions it."""
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]
    for info in (*graph.input, *graph.output, *graph.value_info):
        if info.name == old:
            info.name = new


def fold(model, spec: Preprocessing, sig: Signature, output: str, shape: tuple, pooling: str):
    """Return `model` (changed in place) taking `pixels` (N, H, W, 3) uint8 RGB and returning
    `features` (N, D) float32: `spec`'s scale, mean, std, channel order and layout in front of
    the network's input, `output` (of `shape` on a trial run) pooled by `pooling` behind."""
    from onnx import TensorProto, helper

    graph = model.graph
    if sig.input == INPUT_NAME:
        _rename(graph, sig.input, "featstore_network_input")
        sig = replace(sig, input="featstore_network_input")
    if output == OUTPUT_NAME:
        _rename(graph, output, output := "featstore_network_output")
    g = _Nodes(model)
    a, b = spec.affine()
    x = g.op("Cast", [INPUT_NAME], to=TensorProto.FLOAT)
    x = g.op("Add", [g.op("Mul", [x, g.const(a, np.float32)]), g.const(b, np.float32)])
    if spec.channels == "bgr":
        x = g.op("Gather", [x, g.const([2, 1, 0], np.int64)], axis=3)
    if sig.layout == "nchw":
        x = g.op("Transpose", [x], perm=[0, 3, 1, 2])
    if sig.dtype == "uint8":
        x = g.op("Clip", [g.op("Round", [x]), g.const(0.0, np.float32), g.const(255.0, np.float32)])
    g.op("Cast", [x], sig.input, to=helper.np_dtype_to_tensor_dtype(np.dtype(sig.dtype)))
    head = g.nodes
    g.nodes = []
    y = g.op("Cast", [output], to=TensorProto.FLOAT)  # fp16 networks pool in float32
    y = _pool(g, y, shape, check_pooling(shape, pooling), pooling, sig.layout)
    g.op("Identity", [y], OUTPUT_NAME)

    h, w = hw(sig.size or spec.size)
    pixels = helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, ["N", h, w, 3])
    features = helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", None])
    kept = [i for i in graph.input if i.name != sig.input]
    del graph.input[:]
    graph.input.extend([pixels, *kept])
    del graph.output[:]
    graph.output.append(features)
    nodes = [*head, *graph.node, *g.nodes]
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(g.inits)
    return model
