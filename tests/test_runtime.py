"""ONNX Runtime sessions and the run's device: CPU runs, and a GPU asked for on a CPU machine is a
clear error."""

from __future__ import annotations

import numpy as np
import pytest

from featstore.errors import DeviceError, InvalidOptionError
from featstore.inference.devices import default_threads, gpu_count
from featstore.inference.onnxruntime_runtime import open_session, resolve_device
from featstore.inference.options import InferenceOptions

no_gpu = pytest.mark.skipif(gpu_count() > 0, reason="this machine has a GPU")


def test_cpu_session_runs_uint8_batches(tiny_onnx):
    s = open_session(tiny_onnx, device="cpu", n_threads=1)
    assert s.providers == ["CPUExecutionProvider"] and s.device == "cpu"
    out = s.run(np.zeros((3, 16, 16, 3), np.uint8))
    assert out.shape == (3, 8) and out.dtype == np.float32


def test_auto_is_cpu_without_gpu(tiny_onnx, capfd):
    if gpu_count() > 0:
        pytest.skip("this machine has a GPU")
    assert resolve_device("auto") == "cpu"
    s = open_session(tiny_onnx, device="auto")
    assert s.device == "cpu"
    assert capfd.readouterr().err == ""  # no library-loading noise


@no_gpu
@pytest.mark.parametrize("device", ["cuda", "tensorrt"])
def test_gpu_requested_without_gpu_is_an_error(tiny_onnx, device):
    with pytest.raises(DeviceError, match=f"--device {device} asked for") as err:
        open_session(tiny_onnx, device=device)
    assert "use --device cpu" in str(err.value) or "install" in str(err.value)


def test_unknown_device():
    from featstore.inference.runtimes import resolve

    with pytest.raises(InvalidOptionError, match="device: must be one of auto, cpu, cuda, tensorrt"):
        resolve("tpu", "auto")


@pytest.mark.parametrize(
    "kwargs,param",
    [
        ({"device": "tpu"}, "device"),
        ({"batch_size": "many"}, "batch_size"),
        ({"batch_size": 0}, "batch_size"),
        ({"n_threads": 0}, "n_threads"),
        ({"engine": "dask"}, "engine"),
        ({"ray_address": "auto"}, "ray_address"),
        ({"runtime": "tvm"}, "runtime"),
    ],
)
def test_runtime_options_name_the_bad_value(kwargs, param):
    with pytest.raises(InvalidOptionError) as err:
        InferenceOptions(**kwargs).check()
    assert err.value.param == param
    assert InferenceOptions(engine="ray", ray_address="auto").check().batch_or(8) == 8
    assert InferenceOptions(batch_size="5").check().batch_or(8) == 5


def test_float_input_models_are_fed_float(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["x"], ["y"], axes=[1, 2], keepdims=0)],
        "f",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, 4, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "f.onnx"))
    s = open_session(tmp_path / "f.onnx", device="cpu")
    np.testing.assert_allclose(s.run(np.full((1, 4, 4, 3), 200, np.uint8)), [[200, 200, 200]])


def test_threads_default_to_cores(tiny_onnx):
    assert open_session(tiny_onnx, device="cpu").n_threads == default_threads() >= 1


def test_sessions_count_inference_seconds(tiny_onnx):
    s = open_session(tiny_onnx, device="cpu", n_threads=1)
    s.run(np.zeros((2, 16, 16, 3), np.uint8))
    assert s.inference_s > 0 and s.transfer_s == 0 and not s.on_gpu


def test_batch_size_auto_on_the_cpu(tiny_onnx):
    from featstore.inference.devices import CPU_BATCH, choose_batch_size

    assert choose_batch_size(open_session(tiny_onnx, device="cpu"), 16, n_images=1000) == CPU_BATCH == 32


def test_tensorrt_options_cache_engines_in_the_store(tmp_path, tiny_onnx):
    from featstore.inference.devices import TRT_MAX_BATCH, engine_cached
    from featstore.inference.onnxruntime_runtime import _input_shape, tensorrt_options

    cache = tmp_path / "backbones" / "trt-cache"
    shape = _input_shape(tiny_onnx)
    assert shape == ("pixels", 16)
    o = tensorrt_options("fp16", cache, "tiny-fp16-abc-trt", shape)
    assert cache.is_dir() and o["trt_engine_cache_path"] == o["trt_timing_cache_path"] == str(cache)
    assert (o["trt_engine_cache_enable"], o["trt_fp16_enable"], o["trt_int8_enable"]) == (
        "True",
        "True",
        "False",
    )
    assert o["trt_engine_cache_prefix"] == "tiny-fp16-abc-trt"
    assert o["trt_profile_min_shapes"] == "pixels:1x16x16x3"
    assert o["trt_profile_max_shapes"] == f"pixels:{TRT_MAX_BATCH}x16x16x3" == o["trt_profile_opt_shapes"]
    assert tensorrt_options("int8", None, None, None)["trt_int8_enable"] == "True"
    assert tensorrt_options("fp32", None, None, None)["trt_fp16_enable"] == "False"
    assert not engine_cached(cache, "tiny-fp16-abc-trt")
    (cache / "tiny-fp16-abc-trt_sm90_1.engine").write_bytes(b"engine")  # how the provider names them
    assert engine_cached(cache, "tiny-fp16-abc-trt") and not engine_cached(cache, "other")


@no_gpu
@pytest.mark.parametrize("device", ["cuda", "tensorrt"])
def test_gpu_checked_before_any_work(photos, store, tiny_onnx, device):
    from conftest import via_store

    extract = via_store("extract")
    from featstore.inference.runtimes import resolve_device

    assert resolve_device("cpu", "auto") == "cpu" and resolve_device("auto", "auto") == "cpu"
    with pytest.raises(DeviceError, match=f"--device {device} asked for"):
        resolve_device(device, "auto")
    for precision in ("fp32", "int8", "fp16"):
        with pytest.raises(DeviceError, match=f"--device {device} asked for"):
            extract(str(photos), str(tiny_onnx), store=str(store), device=device, precision=precision)
    assert not store.exists()


def test_a_new_runtime_is_one_registration(photos, store, tiny_onnx):
    from conftest import via_store

    from featstore.inference.runtimes import (
        RUNTIMES,
        Runtime,
        available_runtimes,
        get_runtime,
        register_runtime,
    )

    ort, opened = get_runtime("onnxruntime"), []

    def open_mine(model, device, n_threads, **kw):
        opened.append((device, kw["precision"]))
        return ort.open(model, device, n_threads, **kw)

    register_runtime(Runtime("mine", "My runtime", {"cpu": ("fp32",)}, open_mine))
    try:
        assert available_runtimes()[-1] == "mine"
        r = via_store("extract")(photos, str(tiny_onnx), store=store, emissions=False, runtime="mine")
        assert opened == [("cpu", "fp32")] and r.n_computed == 8 and r.feature_set == "photos@tiny"
        with pytest.raises(InvalidOptionError, match="mine has no int8 kernels on the CPU"):
            via_store("extract")(photos, str(tiny_onnx), store=store, runtime="mine", precision="int8")
    finally:
        RUNTIMES.remove("mine")
    with pytest.raises(
        InvalidOptionError, match="runtime: must be one of auto, onnxruntime, openvino, not 'mine'"
    ):
        InferenceOptions(runtime="mine").check()
