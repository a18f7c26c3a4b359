"""Running backbones: the runtime registry (ONNX Runtime, OpenVINO) and where a run computes,
this machine's devices, precision variants (int8 calibrated on the user's images, fp16, bf16)
and their check against fp32, stage timings and the Ray engine."""

from featstore.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "InferenceOptions": "options",
        "PrecisionOptions": "options",
        "Runtime": "runtimes",
        "Target": "runtimes",
        "register_runtime": "runtimes",
        "get_runtime": "runtimes",
        "available_runtimes": "runtimes",
        "resolve": "runtimes",
        "open_model": "runtimes",
        "prepare_model": "precision",
        "precision_label": "precision",
        "find_variant": "variants",
        "StageTimes": "profiling",
        "RayEngine": "ray_engine",
    },
)
