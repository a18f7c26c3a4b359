"""`featstore export`: one ONNX file, uint8 RGB pixels in, class probabilities out, needing
onnxruntime only; checked against featstore's scoring, class names and preprocessing in its
metadata, never replacing a file it was not told to replace."""

from __future__ import annotations

import errno
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featstore.data.options import Size, hw, size_text
from featstore.errors import ExportError, FeatstoreError, InvalidOptionError, OutputExistsError
from featstore.files import claim, new_temp, space_error
from featstore.heads.onnx_graphs import head_model, real_inputs, rewire
from featstore.options import Record
from featstore.scoring.predictor import Predictor, load_predictor
from featstore.scoring.tables import check_output
from featstore.store.layout import resolve_store

#: Largest |probability difference| allowed between the exported file and featstore's own scoring.
MAX_PROBA_DIFF = 1e-4
INPUT_NAME = "pixels"
OUTPUT_NAME = "probabilities"
#: The exported graph's second output with a rejection threshold: class index, -1 for unknown.
LABEL_NAME = "label"
#: The lowest ONNX opset the head graphs are written for.
MIN_OPSET = 13


@dataclass
class DeployResult(Record):
    """One exported classifier file and how well it agrees with featstore's scoring."""

    head_id: str
    path: str
    class_names: list[str]
    input_size: Size
    resize: str
    backbones: list[str]
    opset: int
    size_mb: float
    max_abs_diff: float
    seconds: float


# ---------------------------------------------------------------- graph surgery


def _onnx():
    import onnx

    return onnx


def _default_opset(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _stage_nodes(model, prefix: str, helper, TensorProto) -> tuple[list, str]:
    """Nodes that feed `pixels` to backbone stage `model` (prefixed), and its features output."""
    g = model.graph
    (inp,) = real_inputs(g)
    out = g.output[0].name
    elem = inp.type.tensor_type.elem_type
    op = ("Identity", {}) if elem == TensorProto.UINT8 else ("Cast", {"to": elem})
    nodes = [helper.make_node(op[0], [INPUT_NAME], [inp.name], name=f"{prefix}input", **op[1])]
    if len(g.output[0].type.tensor_type.shape.dim) != 2:
        nodes.append(helper.make_node("Flatten", [out], [f"{out}/2d"], axis=1))
        out = f"{out}/2d"
    return [*nodes, *g.node], out


def _head_nodes(model, feats: list[str], helper) -> list:
    """The head's nodes (prefixed `model`), reading the stages' features joined as `features`."""
    g = model.graph
    (inp,) = real_inputs(g)
    op = ("Identity", {}) if len(feats) == 1 else ("Concat", {"axis": 1})
    joined = helper.make_node(op[0], feats, ["features"], name="features", **op[1])
    rewire(g.node, inp.name, "features")
    out = helper.make_node("Identity", [g.output[0].name], [OUTPUT_NAME], name=OUTPUT_NAME)
    return [joined, *g.node, out]


def _label_nodes(reject_below: float, helper, numpy_helper) -> tuple[list, list]:
    """Nodes and initialisers of `label` (N,) int64: the most probable class's index, or -1 where
    its probability is below `reject_below`."""
    nodes = [
        helper.make_node("ArgMax", [OUTPUT_NAME], ["top_index"], axis=1, keepdims=1),
        helper.make_node("GatherElements", [OUTPUT_NAME, "top_index"], ["top_probability"], axis=1),
        helper.make_node("Less", ["top_probability", "reject_below"], ["unsure"]),
        helper.make_node("Where", ["unsure", "unknown_label", "top_index"], ["labels_2d"]),
        helper.make_node("Reshape", ["labels_2d", "flat"], [LABEL_NAME]),
    ]
    inits = [
        numpy_helper.from_array(np.array(reject_below, np.float32), "reject_below"),
        numpy_helper.from_array(np.array(-1, np.int64), "unknown_label"),
        numpy_helper.from_array(np.array([-1], np.int64), "flat"),
    ]
    return nodes, inits


def compose(
    stages: list,
    head,
    class_names: list[str],
    input_size: Size,
    metadata: dict,
    reject_below: float | None = None,
):
    """Join backbone models `stages` (each pixels -> (N, D_i)) and `head` ((N, sum D_i) float32 ->
    (N, C) float32) into one model: `pixels` (N, H, W, 3) uint8 -> `probabilities` (N, C) float32
    (and with `reject_below`, `label` (N,) int64: the class index, -1 where the top probability
    is below it)."""
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
        m = add_prefix(model, f"backbone{i}/" if i < len(stages) else "head/")
        if i < len(stages):
            stage_nodes, out = _stage_nodes(m, f"backbone{i}/", helper, TensorProto)
            nodes.extend(stage_nodes)
            feats.append(out)
        else:
            nodes.extend(_head_nodes(m, feats, helper))
        inits.extend(m.graph.initializer)
        functions.extend(m.functions)
    outputs = [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["n", len(class_names)])]
    if reject_below is not None:
        from onnx import numpy_helper

        more, values = _label_nodes(reject_below, helper, numpy_helper)
        nodes += more
        inits += values
        outputs.append(helper.make_tensor_value_info(LABEL_NAME, TensorProto.INT64, ["n"]))
    graph = helper.make_graph(
        nodes,
        "featstore_classifier",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, ["n", *hw(input_size), 3])],
        outputs,
        initializer=inits,
    )
    used = {n.domain for n in nodes} | {""}  # an int8 model declares domains it never uses
    imports = [helper.make_opsetid(d, v) for d, v in sorted(opsets.items()) if d in used]
    model = helper.make_model(graph, opset_imports=imports, functions=functions, producer_name="featstore")
    model.ir_version = max(ir, helper.find_min_ir_version_for(imports, ignore_unknown=True))
    _describe(model, class_names, input_size, metadata)
    onnx.checker.check_model(model)
    return model


def _describe(model, class_names: list[str], input_size: Size, metadata: dict) -> None:
    """Set the model's doc string and metadata entries (JSON for what is not a string)."""
    h, w = hw(input_size)
    model.doc_string = (
        f"{metadata.get('head_id')}: (N, {h}, {w}, 3) uint8 RGB pixels resized by "
        f"{metadata.get('resize')!r} -> (N, {len(class_names)}) class probabilities; classes in metadata"
    )
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key = key
        entry.value = value if isinstance(value, str) else json.dumps(value)


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


#: Temporaries of a killed export older than this are removed by the next export to the same name.
STALE_TEMP_S = 600.0
#: errno values of file systems without hard links (the no-replace write falls back to a claim).
_NO_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.ENOSYS, errno.EMLINK}


def _remove_stale(path: Path) -> None:
    """Delete `.<name>.*.tmp` files beside `path` older than `STALE_TEMP_S` (a killed export's)."""
    now = time.time()
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            if now - tmp.stat().st_mtime > STALE_TEMP_S:
                tmp.unlink()
        except OSError:
            pass


def write_output(path: Path, data: bytes, overwrite: bool) -> None:
    """Write `data` at `path` through a fsynced temporary file: renamed onto it with `overwrite`,
    else hard-linked, which fails when `path` exists, so a file written meanwhile is never
    replaced. OutputExistsError then; StoreError or FeatstoreError when it cannot be written."""
    _remove_stale(path)
    taken = f"output {path} exists already; pass --overwrite to replace it"
    tmp = new_temp(path.parent, path.name)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            _link_new(tmp, path, taken)
    except OSError as err:
        wrapped = space_error(err, path)
        if wrapped is err:
            raise FeatstoreError(f"cannot write {path}: {err.strerror}") from err
        raise wrapped from err
    finally:
        tmp.unlink(missing_ok=True)


def _link_new(tmp: Path, path: Path, taken: str) -> None:
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise OutputExistsError(taken) from None
    except OSError as err:
        if err.errno not in _NO_LINKS:
            raise
        with claim(path, OutputExistsError, taken):
            os.replace(tmp, path)


def check_pixels(predictor: Predictor, n: int = 6, seed: int = 0) -> np.ndarray:
    """Pixels the export is checked on: (n, H, W, 3) uint8 smooth random images."""
    rng = np.random.default_rng(seed)
    h, w = hw(predictor.input_size)
    low = rng.integers(0, 256, (n, 4, 4, 3)).astype(np.float64)
    rows, cols = np.minimum((np.arange(h) * 4) // h, 3), np.minimum((np.arange(w) * 4) // w, 3)
    return low[:, rows][:, :, cols].astype(np.uint8)


def featstore_proba(predictor: Predictor, pixels: np.ndarray) -> np.ndarray:
    """Probabilities featstore's scoring gives `pixels` (N, S, S, 3) uint8: (N, C) float64."""
    from featstore.inference.runtimes import open_model, reference_runtime

    outputs = [open_model(s.path, reference_runtime()).run(pixels) for s in predictor.stages]
    return predictor.predict_proba(outputs)


def _metadata(predictor: Predictor, head: str) -> dict:
    """The exported file's metadata: classes, preprocessing, input and output, provenance."""
    from featstore import __version__

    size = predictor.input_size
    h, w = hw(size)
    members = predictor.meta.get("members")
    return {
        "classes": predictor.class_names,
        "head_id": head,
        "kind": predictor.meta.get("config", {}).get("kind"),
        **({"members": members} if members else {}),
        "input_size": size_text(size),
        "resize": predictor.resize,
        "input": f"pixels: (N, {h}, {w}, 3) uint8 RGB",
        "output": "probabilities: (N, n_classes) float32, columns in the order of `classes`",
        "backbones": [{"label": s.label, "digest": s.digest} for s in predictor.stages],
        "feature_sets": predictor.meta.get("feature_sets", []),
        "featstore_version": __version__,
    }


def _difference(predictor: Predictor, data: bytes, head: str) -> float:
    """Largest |probability difference| between model `data` and featstore's scoring on
    `check_pixels`; ExportError when it does not run or exceeds `MAX_PROBA_DIFF`."""
    from featstore.inference.runtimes import open_model, reference_runtime

    pixels = check_pixels(predictor)
    try:
        got = open_model(data, reference_runtime()).run(pixels)
    except FeatstoreError as err:
        raise ExportError(f"the exported graph of head {head} does not run: {err}") from err
    diff = float(np.abs(got - featstore_proba(predictor, pixels)).max())
    if not np.isfinite(diff) or diff > MAX_PROBA_DIFF:
        raise ExportError(
            f"the exported graph of head {head} differs from featstore's scoring by {diff:.2e} "
            f"(limit {MAX_PROBA_DIFF:.0e}); nothing was written"
        )
    return diff


def export_head(
    head: str,
    output: str | os.PathLike,
    *,
    store: str | None = None,
    overwrite: bool = False,
    reject_below: float | None = None,
) -> DeployResult:
    """Write head `head` and its backbone(s) as one ONNX file at `output`: `pixels` (N, S, S, 3)
    uint8 RGB, resized as the head's features were, to `probabilities` (N, n_classes) float32;
    with `reject_below` (0 < P < 1) also `label` (N,) int64, the class index or -1 (unknown)
    where the top probability is below P, the threshold kept in the metadata.

    Class names and the resize policy go into its metadata (an ensemble's `members` too). The
    file is checked against featstore's own scoring on random images before it is written
    (largest difference `MAX_PROBA_DIFF`).

    Raises
    ------
    UnknownHeadError, StoreError
        No such head, or a backbone ONNX file it needs is missing.
    OutputExistsError, FeatstoreError
        The output exists (without `overwrite`) or its folder cannot be written.
    ExportError
        The head (or an ensemble member) cannot be converted, or disagrees with scoring.
    """
    t0 = time.perf_counter()
    if reject_below is not None and not (isinstance(reject_below, (int, float)) and 0 < reject_below < 1):
        raise InvalidOptionError(
            "reject_below", f"must be a probability between 0 and 1, not {reject_below!r}"
        )
    path = check_output(output, overwrite, (".onnx",))
    predictor = load_predictor(resolve_store(store), head=head)
    opset, backbones = _backbone_opset(predictor)
    n_features = sum(s.n_outputs for s in predictor.stages)
    kind = predictor.meta.get("config", {}).get("kind")
    head_graph = head_model(predictor.estimator, n_features, len(predictor.class_names), opset, kind=kind)
    metadata = _metadata(predictor, head)
    if reject_below is not None:
        metadata["reject_below"] = float(reject_below)
        metadata["label"] = f"{LABEL_NAME}: (N,) int64, the class index; -1 (unknown) below reject_below"
    model = compose(
        backbones, head_graph, predictor.class_names, predictor.input_size, metadata, reject_below
    )
    data = model.SerializeToString()
    diff = _difference(predictor, data, head)
    write_output(path, data, overwrite)
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
