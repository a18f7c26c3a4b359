"""int8 static quantization (calibrated on decoded uint8 images) and fp16 conversion of an fp32
ONNX backbone; the input stays uint8 and the output float32."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from featstore.errors import ExportError

#: Settings of the int8 recipe; they are part of every int8 model's cache key.
INT8_SETTINGS = {
    "format": "QDQ",
    "activations": "uint8",
    "weights": "int8 per channel",
    "calibration": "MinMax",
    # the convolutions and what sits between them (Mul and Sigmoid: EfficientNet's swish and
    # squeeze-excitation, 1.5x faster than leaving them in float); the final pooling stays
    # float32 (quantizing the features themselves costs accuracy), and so does the preprocess
    "ops": ["Conv", "MatMul", "Gemm", "Add", "Mul", "Sigmoid", "Clip", "Relu", "MaxPool"],
    "excluded": "the folded preprocess (Cast, scale, mean) stays float32",
}
#: Images per calibration batch (the calibrator keeps only each tensor's min and max per batch).
CALIBRATION_BATCH = 16
#: Settings of the fp16 recipe (part of the fp16 cache key).
FP16_SETTINGS = {
    "keep_io_types": True,
    "blocked": "the folded preprocess stays float32",
    "duplicates": "dropped",  # the converter's repeated casts (a model that ONNX Runtime refuses)
}


def _named(model):
    """Give every unnamed node a name (exclusion lists go by name); return the model."""
    for i, node in enumerate(model.graph.node):
        node.name = node.name or f"{node.op_type}_{i}"
    return model


def _preprocess_nodes(model) -> list[str]:
    """Names of the nodes of featstore's folded `preprocess` layer (and the input Cast)."""
    names = [n.name for n in model.graph.node if "/preprocess" in n.name or n.name.startswith("preprocess")]
    first = [
        n.name for n in model.graph.node if n.op_type == "Cast" and n.input[0] == model.graph.input[0].name
    ]
    return sorted(set(names + first))


def _batches(images: np.ndarray, input_name: str) -> Iterator[dict]:
    for i in range(0, len(images), CALIBRATION_BATCH):
        yield {input_name: np.ascontiguousarray(images[i : i + CALIBRATION_BATCH])}


def quantize_int8(fp32_path: Path, images: np.ndarray, out: Path) -> None:
    """Write an int8 QDQ model of `fp32_path` to `out`, calibrated on `images` ((n, size, size, 3)
    uint8, decoded as extract decodes them); ExportError when ONNX Runtime fails."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self, name: str):
            self.name = name
            self.it = _batches(images, name)

        def get_next(self):
            return next(self.it, None)

        def rewind(self):
            self.it = _batches(images, self.name)

    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".quant-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        try:
            # shape inference plus ORT's fusions (batch norm into conv), so conv + bias quantize as one
            quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
            model = _named(onnx.load(str(pre)))
            onnx.save(model, str(pre))
            input_name = model.graph.input[0].name
            quantize_static(
                str(pre),
                str(out),
                Reader(input_name),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=_preprocess_nodes(model),
                op_types_to_quantize=list(INT8_SETTINGS["ops"]),
                calibrate_method=CalibrationMethod.MinMax,
                calibration_providers=["CPUExecutionProvider"],
            )
        except Exception as err:  # noqa: BLE001 - onnxruntime.quantization raises many types
            raise ExportError(f"onnxruntime could not quantize {fp32_path.name} to int8: {err}") from err


def drop_duplicate_nodes(model):
    """Remove nodes identical to an earlier one; return the model. ONNX Runtime's fp16 converter
    inserts such duplicate casts, which it then refuses to load (VGG, ResNet)."""
    seen, keep = set(), []
    for node in model.graph.node:
        key = node.SerializeToString()
        if key not in seen:
            seen.add(key)
            keep.append(node)
    if len(keep) != len(model.graph.node):
        del model.graph.node[:]
        model.graph.node.extend(keep)
    return model


def convert_fp16(fp32_path: Path, out: Path) -> None:
    """Write an fp16 copy of `fp32_path` to `out`, uint8 input and float32 output kept; ExportError
    when the converter fails."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    try:
        model = _named(onnx.load(str(fp32_path)))
        blocked = _preprocess_nodes(model)
        half = convert_float_to_float16(model, keep_io_types=True, node_block_list=blocked)
        onnx.save(drop_duplicate_nodes(half), str(out))
    except Exception as err:  # noqa: BLE001 - the converter raises many types
        raise ExportError(f"could not convert {fp32_path.name} to fp16: {err}") from err
