"""Running backbones: the runtime registry (ONNX Runtime, OpenVINO) and where a run computes,
this machine's devices, precision variants (int8 calibrated on the user's images, fp16, bf16)
and their check against fp32, stage timings and the Ray engine."""
