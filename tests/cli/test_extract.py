"""`featstore extract` through Typer's test runner and through the installed command."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from typer.testing import CliRunner

from featstore_cli.app import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_extract_then_rerun(photos, store, tiny_onnx):
    args = [
        "extract",
        "--backbone",
        str(tiny_onnx),
        "--data",
        str(photos),
        "--store",
        str(store),
        "--no-emissions",
    ]
    first = invoke(*args, "--quiet")
    assert first.exit_code == 0, first.output
    lines = first.stdout.splitlines()
    assert lines[0] == "photos@tiny: 8 images, 8 features (float32), 2 classes"
    assert lines[1] == "  computed 8, reused 0, resumed 0, removed 0, skipped 0"
    again = invoke(*args, "--json")
    assert again.exit_code == 0
    result = json.loads(again.stdout)
    assert (result["n_computed"], result["n_reused"], result["written"]) == (0, 8, False)
    assert result["feature_set"] == "photos@tiny" and result["emissions"]["energy_kwh"] is None


def test_augmented_views(photos, store, tiny_onnx):
    args = ["extract", "-b", str(tiny_onnx), "-d", str(photos), "--store", str(store), "--no-emissions"]
    aug = ["--augment", "flip,rotate,zoom", "--copies", "2", "--augment-seed", "3"]
    first = invoke(*args, *aug, "-q")
    assert first.exit_code == 0, first.output
    lines = first.stdout.splitlines()
    assert lines[0] == "photos@tiny: 8 images, 16 augmented views, 8 features (float32), 2 classes"
    assert lines[1] == "  computed 24, reused 0, resumed 0, removed 0, skipped 0"
    again = json.loads(invoke(*args, *aug, "--json").stdout)
    assert (again["n_views"], again["n_computed"], again["n_reused"], again["written"]) == (16, 0, 24, False)
    assert again["augment"] == {"ops": ["flip", "rotate", "zoom"], "copies": 2, "seed": 3, "version": 1}
    show = invoke("store", "show", "photos@tiny", "--store", str(store))
    assert "  n_rows: 24" in show.stdout and "  n_augmented: 16" in show.stdout
    assert invoke("store", "verify", "--store", str(store)).exit_code == 0


def test_skipped_files_are_listed(photos, store, tiny_onnx):
    (photos / "cat" / "oops.jpg").write_text("text")
    out = invoke(
        "extract", "-b", str(tiny_onnx), "-d", str(photos), "--store", str(store), "--no-emissions", "-q"
    )
    assert out.exit_code == 0
    assert out.stdout.splitlines()[-2:] == ["skipped:", "  cat/oops.jpg: not an image Pillow can read"]


def test_emissions_are_reported(photos, store, tiny_onnx):
    out = invoke(
        "extract", "-b", str(tiny_onnx), "-d", str(photos), "--store", str(store), "--country", "fra", "-q"
    )
    assert out.exit_code == 0
    assert "kWh, CO2" in out.stdout and "(FRA)" in out.stdout


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--data", "/nonexistent/photos"], "Error: data path /nonexistent/photos does not exist"),
        (["--backbone", "alexnet"], "Error: unknown backbone 'alexnet'; valid names: vgg16"),
        (["--resize", "stretch"], "Error: --resize: must be one of squash, crop, pad"),
        (["--device", "tpu"], "Error: --device: must be one of auto, cpu, cuda, tensorrt"),
        (["--name", "../escape"], "Error: dataset name '../escape' must start with a letter"),
        (["--copies", "2"], "Error: --copies: 2 augmented views need transforms"),
        (["--augment", "flip,blur", "--copies", "2"], "Error: --augment: unknown augmentation 'blur' in"),
        (["--augment", "flip"], "Error: --copies: must be at least 1 with transforms"),
    ],
)
def test_bad_input_is_one_line_and_exit_1(photos, store, tiny_onnx, extra, message):
    args = {"--backbone": str(tiny_onnx), "--data": str(photos), "--store": str(store)}
    for key, value in zip(extra[::2], extra[1::2], strict=True):
        args[key] = value
    flat = [x for kv in args.items() for x in kv]
    out = invoke("extract", *flat, "--no-emissions", "-q")
    assert out.exit_code == 1
    assert out.stderr.startswith(message) and len(out.stderr.strip().splitlines()) == 1
    assert out.stdout == ""


def test_imagenet_weights_missing_is_a_clear_error(photos, store, keras_home):
    out = invoke("extract", "-b", "vgg16", "-d", str(photos), "--store", str(store), "--no-emissions")
    assert out.exit_code == 1
    assert out.stderr.startswith("Error: ImageNet weights for vgg16 are not cached (")
    assert f"{keras_home}/models/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5" in out.stderr
    assert "FEATSTORE_OFFLINE=1 forbids downloading" in out.stderr  # the tests run offline
    assert "Traceback" not in out.output


def test_gpu_on_cpu_machine_is_an_error(photos, store, tiny_onnx):
    from featstore.inference.devices import gpu_count

    if gpu_count():
        pytest.skip("this machine has a GPU")
    out = invoke(
        "extract",
        "-b",
        str(tiny_onnx),
        "-d",
        str(photos),
        "--store",
        str(store),
        "--device",
        "cuda",
        "--no-emissions",
        "-q",
    )
    assert out.exit_code == 1 and out.stderr.startswith("Error: --device cuda asked for")
    assert not (store / "features" / "photos@tiny.h5").exists()


def test_usage_errors_exit_2(photos, store):
    out = invoke("extract", "--data", str(photos))
    assert out.exit_code == 2 and "Missing option '--backbone'" in out.stderr


@pytest.mark.slow
def test_registry_backbone_end_to_end(photos, store_with_mnv2):
    out = invoke(
        "extract",
        "-b",
        "mobilenet_v2",
        "-d",
        str(photos),
        "--weights",
        "none",
        "--input-size",
        "32",
        "--store",
        str(store_with_mnv2),
        "--json",
        "--no-emissions",
    )
    assert out.exit_code == 0, out.output
    r = json.loads(out.stdout)
    assert r["feature_set"] == "photos@mobilenet_v2-32px-random" and r["n_features"] == 1280


def test_installed_command(photos, tmp_path, tiny_onnx):
    exe = shutil.which("featstore")
    assert exe, "the featstore console script is not installed"
    store = tmp_path / "s"
    out = subprocess.run(
        [
            exe,
            "extract",
            "-b",
            str(tiny_onnx),
            "-d",
            str(photos),
            "--store",
            str(store),
            "--json",
            "--no-emissions",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["n_images"] == 8
    ls = subprocess.run([exe, "store", "ls", "--store", str(store), "--json"], capture_output=True, text=True)
    assert [r["name"] for r in json.loads(ls.stdout)] == ["photos@tiny"]
    bad = subprocess.run(
        [exe, "store", "show", "nope@x", "--store", str(store)], capture_output=True, text=True
    )
    assert bad.returncode == 1 and bad.stderr.startswith("Error: no feature set 'nope@x'")


def test_int8_profile_decoder_and_batch_size(tmp_path, store, tiny_onnx):
    from conftest import make_class_folders

    photos = make_class_folders(tmp_path / "photos", n_per_class=6)
    args = ["extract", "-b", str(tiny_onnx), "-d", str(photos), "--store", str(store), "--no-emissions"]
    r = invoke(*args, "--precision", "int8", "--profile", "--decoder", "pillow", "--batch-size", "5", "-q")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0] == "photos@tiny-int8: 12 images, 8 features (float32), 2 classes"
    assert ", batch 5 -> " in lines[2]
    assert lines[3].startswith("  int8 model calibrated on photos (12 images); vs fp32 on 12 images: cosine ")
    assert "logistic accuracy" in lines[3] and "% int8 (" in lines[3]
    at = lines.index(next(ln for ln in lines if ln.startswith("profile: 12 images computed in ")))
    assert lines[at + 1].split() == ["stage", "seconds", "ms_per_image", "share_of_wall", "where"]
    stages = [ln.split("  ")[0] for ln in lines[at + 3 :]]
    assert stages == ["read + hash", "decode + resize", "wait for decode", "inference", "write", "other"]
    again = json.loads(invoke(*args, "--precision", "int8", "--json").stdout)
    assert again["feature_set"] == "photos@tiny-int8" and again["n_computed"] == 0
    assert again["precision"] == "int8" and again["precision_check"]["n_images"] == 12
    assert "profile" not in again
    plain = json.loads(invoke(*args, "--json", "--profile", "--batch-size", "auto").stdout)
    assert plain["feature_set"] == "photos@tiny" and plain["batch_size"] == 32
    assert [s["stage"] for s in plain["profile"]["stages"]][-1] == "other"


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--precision", "int4"], "Error: --precision: must be one of fp32, int8, fp16, bf16, not 'int4'"),
        (["--decoder", "turbo"], "Error: --decoder: must be one of auto, pillow, simplejpeg, not 'turbo'"),
        (
            ["--batch-size", "many"],
            "Error: --batch-size: must be a whole number of at least 1, or auto; not 'many'",
        ),
        (
            ["--batch-size", "0"],
            "Error: --batch-size: must be a whole number of at least 1, or auto; not '0'",
        ),
    ],
)
def test_bad_speed_options(photos, store, tiny_onnx, extra, message):
    r = invoke("extract", "-b", str(tiny_onnx), "-d", str(photos), "--store", str(store), *extra)
    assert r.exit_code == 1 and r.stderr.strip() == message


def test_fp16_on_the_cpu_is_an_error(photos, store, tiny_onnx):
    from featstore.inference.devices import gpu_count

    if gpu_count() > 0:
        pytest.skip("this machine has a GPU")
    r = invoke(
        "extract", "-b", str(tiny_onnx), "-d", str(photos), "--store", str(store), "--precision", "fp16"
    )
    assert r.exit_code == 1
    assert r.stderr.startswith("Error: --precision fp16 runs on a GPU (--device cuda or tensorrt)")
    assert not (store / "features").exists()


def test_accuracy_warning_goes_to_stderr(tmp_path, store, tiny_onnx):
    """A check that lost more than half a point (recorded in the int8 sidecar) warns on every use."""
    from conftest import make_class_folders

    photos = make_class_folders(tmp_path / "photos", n_per_class=3)
    args = ["extract", "-b", str(tiny_onnx), "-d", str(photos), "--store", str(store), "--no-emissions"]
    args += ["--runtime", "onnxruntime"]  # the int8 file's own check (OpenVINO's has its own sidecar)
    assert invoke(*args, "--precision", "int8", "-q").exit_code == 0
    (sidecar,) = (store / "backbones").glob("*-int8-*.json")
    meta = json.loads(sidecar.read_text())
    meta["check"].update(accuracy_loss_points=2.0, fp32_accuracy=0.9, int8_accuracy=0.88)
    sidecar.write_text(json.dumps(meta))
    r = invoke(*args, "--precision", "int8", "--json", "--quiet")  # warnings show even when quiet
    assert r.exit_code == 0
    assert r.stderr.startswith(
        "warning: int8 features lose 2.0 accuracy points against fp32 (logistic head, 6 images"
    )
    assert json.loads(r.stdout)["warnings"][0].startswith("int8 features lose 2.0")


def test_runtime_flag_and_bf16_lines(tmp_path, store, tiny_onnx):
    """--runtime names the runtime in the summary; --precision bf16 (where the CPU has it) prints
    its check like int8's; --profile names the bottleneck."""
    from conftest import make_class_folders

    from featstore.inference import openvino_runtime as ovr

    photos = make_class_folders(tmp_path / "photos", n_per_class=6)
    args = ["extract", "-b", str(tiny_onnx), "-d", str(photos), "--store", str(store), "--no-emissions", "-q"]
    r = invoke(*args, "--runtime", "onnxruntime", "--profile")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert " images/s on cpu with onnxruntime, batch 32 -> " in lines[2]
    profile = next(ln for ln in lines if ln.startswith("profile: 12 images computed in "))
    assert "; bottleneck: " in profile and " of the loop (" in profile
    js = json.loads(invoke(*args, "--runtime", "onnxruntime", "--json", "--profile", "--force").stdout)
    assert js["runtime"] == "onnxruntime" and js["profile"]["runtime"] == "onnxruntime"
    assert js["profile"]["bottleneck"]["stage"] in ("decode", "inference", "transfer", "write", "other")
    if not (ovr.installed() and ovr.has_bf16()):
        pytest.skip("this CPU has no native bfloat16 (or OpenVINO is missing)")
    r = invoke(*args, "--precision", "bf16")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0] == "photos@tiny-bf16: 12 images, 8 features (float32), 2 classes"
    assert " images/s on cpu with openvino, batch 32 -> " in lines[2]
    assert lines[3].startswith("  bf16 model (OpenVINO); vs fp32 on 12 held-out images: cosine ")
    assert "% bf16 (" in lines[3] and "(images/s: openvino fp32 " in lines[3]
    assert "onnxruntime fp32 " in lines[3]
