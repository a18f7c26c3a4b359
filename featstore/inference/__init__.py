"""Running backbones: the runtime that runs them (ONNX Runtime or OpenVINO), precision variants
(int8 quantization calibrated on the user's images, fp16, bf16), calibration samples and the
check against fp32, stage timings and the Ray engine. ONNX Runtime sessions themselves are
`featstore.runtime`, below the backbones that need them to check an export.

Modules: `sessions` (which runtime, opening a model), `openvino_runtime`, `precision`,
`variants`, `quantize`, `calibration`, `profiling`, `ray_engine`. Imports `store`, `data`,
`runtime`, `deps`, `errors`, `files` and `options` (and no `backbones` module: an export
reaches them as an argument).
"""

from featstore.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "prepare_model": "precision",
        "find_variant": "variants",
        "precision_label": "precision",
        "StageTimes": "profiling",
        "PrecisionOptions": "precision",
        "RayEngine": "ray_engine",
        "resolve_runtime": "sessions",
        "open_model": "sessions",
    },
)
