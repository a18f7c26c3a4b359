"""`--runtime auto|onnxruntime|openvino` and `--precision bf16`: which runtime runs where, OpenVINO
missing or a CPU without bfloat16 (simulated), bf16 and OpenVINO int8 features in sets of their
own, fp32 features of both runtimes in one set, and OpenVINO's telemetry kept off."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import make_class_folders, via_store

from featstore.errors import DeviceError, InvalidOptionError, MissingDependencyError, StoreMismatchError
from featstore.inference import openvino_runtime as ovr
from featstore.inference.onnxruntime_runtime import open_session
from featstore.inference.options import InferenceOptions
from featstore.inference.runtimes import available_runtimes, open_model, resolve, resolve_runtime
from featstore.inference.variants import find_variant
from featstore.store.layout import resolve_store
from featstore.store.shards import open_feature_set

extract = via_store("extract")


needs_openvino = pytest.mark.skipif(not ovr.installed(), reason="OpenVINO is not installed")
needs_bf16 = pytest.mark.skipif(
    not (ovr.installed() and ovr.has_bf16()), reason="this CPU has no native bfloat16 (AMX, AVX-512 BF16)"
)


def run(data, store, backbone, **kw):
    kw.setdefault("emissions", False)
    return extract(str(data), str(backbone), store=str(store), **kw)


def features(store, name):
    with open_feature_set(resolve_store(store), name) as r:
        rows = r.rows()
        return dict(zip(rows.paths, r.read_features().astype(np.float32), strict=True)), r.attrs


def cosine(a, b):
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


@pytest.fixture
def no_openvino(monkeypatch):
    """OpenVINO made unimportable, as on a machine without it."""
    monkeypatch.setitem(sys.modules, "openvino", None)


@pytest.fixture
def no_bf16(monkeypatch):
    """A CPU whose OpenVINO plugin reports no native bfloat16 (an AVX2 or AVX-512 CPU before
    Cooper Lake and Zen 4)."""
    monkeypatch.setattr(ovr, "cpu_capabilities", lambda: ("FP32", "INT8", "BIN", "EXPORT_IMPORT"))


def test_bf16_is_decided_from_the_cpu_flags_before_openvino_is_imported(monkeypatch):
    """A Linux CPU without a bfloat16 flag answers no without loading OpenVINO (0.2 s of every
    run that computes); with one, or without /proc/cpuinfo, OpenVINO decides."""

    def refuse():
        raise AssertionError("OpenVINO asked")

    here = ovr._cpu_flags.__wrapped__()
    assert here is None or "fpu" in here  # this machine's flags, read
    monkeypatch.setattr(ovr, "cpu_capabilities", refuse)
    monkeypatch.setattr(ovr, "_cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_vnni"}))
    assert ovr.has_bf16() is False
    monkeypatch.setattr(ovr, "cpu_capabilities", lambda: ("FP32", "BF16", "INT8"))
    for flags in (frozenset({"avx512f", "avx512_bf16"}), frozenset({"amx_bf16"}), None):
        monkeypatch.setattr(ovr, "_cpu_flags", lambda flags=flags: flags)
        assert ovr.has_bf16() is True


def rt(runtime, device, precision="fp32"):
    return resolve_runtime(device, runtime, precision).name


def test_auto_runtime_on_this_machine():
    want = "openvino" if ovr.installed() and ovr.has_bf16() else "onnxruntime"
    assert available_runtimes() == ["onnxruntime", "openvino"]
    assert rt("auto", "cpu") == resolve("auto", "auto")[1].name == want
    assert rt("auto", "cuda") == rt("auto", "tensorrt") == "onnxruntime"
    assert rt("onnxruntime", "cpu", "int8") == "onnxruntime"
    assert rt("auto", "cuda", "fp16") == "onnxruntime"


def test_openvino_and_bf16_take_the_cpu_when_the_device_is_auto(monkeypatch):
    """On a GPU machine (simulated: a GPU is visible and ONNX Runtime can use it), OpenVINO and
    bf16 run on the CPU when the device is left to auto; asked for on the GPU, they are errors."""
    from dataclasses import replace

    from featstore.inference import runtimes

    monkeypatch.setattr(runtimes, "gpu_count", lambda: 1)
    ort = runtimes.get_runtime("onnxruntime")
    monkeypatch.setitem(runtimes.RUNTIMES._entries, "onnxruntime", replace(ort, ready=lambda d: None))
    assert runtimes.resolve_device("auto", "auto", "fp32") == "cuda"
    assert runtimes.resolve_device("auto", "auto", "int8") == "cuda"
    assert runtimes.resolve_device("auto", "openvino", "fp32") == "cpu"
    assert runtimes.resolve_device("auto", "auto", "bf16") == "cpu"
    with pytest.raises(DeviceError, match="--runtime openvino runs on the CPU, and --device cuda"):
        runtimes.resolve("cuda", "openvino")


def test_auto_is_onnxruntime_where_the_cpu_has_no_bf16(no_bf16):
    assert rt("auto", "cpu") == "onnxruntime"
    with pytest.raises(DeviceError, match=r"--precision bf16 needs a CPU with AMX or AVX-512 BF16 \("):
        rt("auto", "cpu", "bf16")


def test_bad_runtime_combinations_are_one_line_errors():
    with pytest.raises(InvalidOptionError, match="runtime: must be one of auto, onnxruntime, openvino"):
        rt("tvm", "cpu")
    with pytest.raises(InvalidOptionError) as err:
        InferenceOptions(runtime="tvm").check()
    assert err.value.param == "runtime"
    with pytest.raises(InvalidOptionError, match="onnxruntime has no bf16 kernels on the CPU"):
        rt("onnxruntime", "cpu", "bf16")
    with pytest.raises(DeviceError, match="--runtime openvino runs on the CPU, and --device cuda"):
        rt("openvino", "cuda")
    with pytest.raises(DeviceError, match="--precision bf16 runs on the CPU"):
        rt("auto", "tensorrt", "bf16")


def test_openvino_missing_is_a_clear_error(no_openvino, photos, store, tiny_onnx):
    assert not ovr.installed() and rt("auto", "cpu") == "onnxruntime"
    for kw in ({"runtime": "openvino"}, {"precision": "bf16"}):
        with pytest.raises(
            MissingDependencyError, match=r'not installed; run: pip install "featstore\[openvino\]"'
        ):
            run(photos, store, tiny_onnx, **kw)
    assert not (store / "features").exists()
    with pytest.raises(MissingDependencyError, match=r'pip install "featstore\[openvino\]"'):
        ovr.openvino()
    # auto falls back to ONNX Runtime
    assert run(photos, store, tiny_onnx).runtime == "onnxruntime"


def test_cli_errors_name_the_flag_and_the_install_line(no_openvino, photos, store, tiny_onnx):
    from typer.testing import CliRunner

    from featstore_cli.app import app

    args = ["extract", "-b", str(tiny_onnx), "-d", str(photos), "--store", str(store), "--no-emissions"]
    r = CliRunner().invoke(app, [*args, "--runtime", "openvino"])
    assert r.exit_code == 1
    assert r.stderr.strip() == (
        'Error: --runtime openvino needs OpenVINO, which is not installed; run: pip install "featstore[openvino]"'
    )
    r = CliRunner().invoke(app, [*args, "--runtime", "tvm"])
    assert r.exit_code == 1
    assert r.stderr.strip() == "Error: --runtime: must be one of auto, onnxruntime, openvino, not 'tvm'"


@needs_openvino
def test_bf16_refused_where_the_cpu_lacks_it(no_bf16, photos, store, tiny_onnx):
    from typer.testing import CliRunner

    from featstore_cli.app import app

    args = ["extract", "-b", str(tiny_onnx), "-d", str(photos), "--store", str(store), "--no-emissions"]
    r = CliRunner().invoke(app, [*args, "--precision", "bf16"])
    assert r.exit_code == 1 and len(r.stderr.strip().splitlines()) == 1
    assert r.stderr.startswith(
        "Error: --precision bf16 needs a CPU with AMX or AVX-512 BF16 (OpenVINO reports"
    )
    assert "use --precision int8 (faster) or fp32 here" in r.stderr
    with pytest.raises(DeviceError, match="needs a CPU with AMX or AVX-512 BF16"):
        ovr.open_openvino(tiny_onnx, 1, "bf16")
    assert not (store / "features").exists()


@needs_openvino
def test_openvino_session_runs_like_onnxruntime(tiny_onnx):
    x = np.random.default_rng(0).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    ov = open_model(tiny_onnx, "openvino", n_threads=1)
    ort = open_model(tiny_onnx, "onnxruntime", n_threads=1)
    assert (ov.runtime, ov.device, ov.on_gpu, ov.providers) == (
        "openvino",
        "cpu",
        False,
        ["OpenVINO CPU (f32)"],
    )
    assert ort.runtime == "onnxruntime"
    got, want = ov.run(x), ort.run(x)
    assert got.dtype == np.float32 and got.shape == (5, 8)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert ov.run(x[:2]).shape == (2, 8) and ov.inference_s > 0  # another batch size, same model
    ov.run(x)[0, 0] = 99.0  # the result is the caller's, not the request's buffer
    np.testing.assert_allclose(ov.run(x), want, rtol=1e-5, atol=1e-6)
    from_bytes = open_model(tiny_onnx.read_bytes(), "openvino", n_threads=1)
    np.testing.assert_array_equal(from_bytes.run(x), got)


@needs_openvino
def test_fp32_features_of_both_runtimes_share_one_set(tmp_path, store, tiny_onnx):
    """fp32 features of OpenVINO and ONNX Runtime differ by float round-off only (about 1e-6
    relative), as CPU and GPU features do: one set, one digest; new rows come from either."""
    photos = make_class_folders(tmp_path / "photos", n_per_class=4)
    a = run(photos, store, tiny_onnx, runtime="onnxruntime")
    make_class_folders(photos, n_per_class=2, seed=9, prefix="new")
    b = run(photos, store, tiny_onnx, runtime="openvino")
    assert (a.runtime, b.runtime) == ("onnxruntime", "openvino")
    assert (b.feature_set, b.backbone_digest) == (a.feature_set, a.backbone_digest)
    assert (b.n_reused, b.n_computed) == (8, 4)
    feats, attrs = features(store, "photos@tiny")
    assert attrs["precision"] == "fp32" and attrs["model"]["runtime"] == "any"
    # every row, from either runtime, is the export's output within float round-off
    from featstore.data.decode import decode_image

    ort = open_session(tiny_onnx, "cpu")
    for path, f in feats.items():
        px = decode_image((photos / path).read_bytes(), 16)
        np.testing.assert_allclose(f, ort.run(px[None])[0], rtol=1e-5, atol=1e-6)


@needs_openvino
def test_int8_under_openvino_is_a_model_of_its_own(tmp_path, store, tiny_onnx):
    photos = make_class_folders(tmp_path / "photos", n_per_class=6)
    logs = []
    ov = run(photos, store, tiny_onnx, precision="int8", runtime="openvino", log=logs.append)
    assert (ov.feature_set, ov.runtime, ov.precision) == ("photos@tiny-int8", "openvino", "int8")
    assert any("under OpenVINO" in m for m in logs)
    layout = resolve_store(store)
    variant = find_variant(layout, ov.backbone_digest)
    (int8_file,) = layout.backbones.glob("*-int8-*.onnx")
    assert (variant.runtime, variant.path, variant.precision) == ("openvino", int8_file, "int8")
    assert len(list(layout.backbones.glob("*-int8_openvino-*.json"))) == 1
    file_variant = find_variant(layout, variant_digest_of(int8_file))
    assert file_variant.runtime == "onnxruntime" and file_variant.digest != ov.backbone_digest
    # both checks: the file's under ONNX Runtime, this one under OpenVINO; both speeds reported
    c = ov.precision_check
    assert c["runtime"] == "openvino" and c["cosine_min"] > 0.99 and c["held_out"] is False
    assert set(c["speeds"]) == {"openvino fp32", "openvino int8", "onnxruntime int8"}
    assert set(file_variant.check["speeds"]) == {"onnxruntime fp32", "onnxruntime int8", "openvino int8"}
    # the stored rows are OpenVINO's output of the int8 file
    feats, attrs = features(store, "photos@tiny-int8")
    assert attrs["model"]["runtime"] == "openvino" and attrs["backbone_digest"] == ov.backbone_digest
    from featstore.data.decode import decode_image

    paths = sorted(feats)
    px = np.stack([decode_image((photos / p).read_bytes(), 16) for p in paths])
    got = np.stack([feats[p] for p in paths])
    np.testing.assert_allclose(open_model(int8_file, "openvino").run(px), got, rtol=1e-5, atol=1e-6)
    # auto keeps the set's runtime; ONNX Runtime asked for explicitly would mix: refused
    assert run(photos, store, tiny_onnx, precision="int8").n_computed == 0
    with pytest.raises(StoreMismatchError, match="precision int8"):
        run(photos, store, tiny_onnx, precision="int8", runtime="onnxruntime")
    # an ONNX Runtime int8 set of the same file is another set
    ort = run(photos, store, tiny_onnx, precision="int8", runtime="onnxruntime", name="photos2")
    assert ort.backbone_digest == file_variant.digest and ort.runtime == "onnxruntime"


def variant_digest_of(onnx_file):
    return json.loads(onnx_file.with_suffix(".json").read_text())["digest"]


@needs_bf16
def test_bf16_features_are_their_own_set_checked_against_fp32(tmp_path, store, tiny_onnx):
    from conftest import via_store

    evaluate = via_store("evaluate")
    from conftest import via_store

    fit_head = via_store("fit_head")

    photos = make_class_folders(tmp_path / "photos", n_per_class=6)
    r32 = run(photos, store, tiny_onnx)
    logs = []
    r16 = run(photos, store, tiny_onnx, precision="bf16", log=logs.append)
    assert (r16.feature_set, r16.backbone, r16.precision, r16.runtime) == (
        "photos@tiny-bf16",
        "tiny-bf16",
        "bf16",
        "openvino",
    )
    assert r16.backbone_digest not in (r32.backbone_digest,) and r16.calibration is None
    assert any("in bf16 under OpenVINO" in m for m in logs)
    f32, a32 = features(store, "photos@tiny")
    f16, a16 = features(store, "photos@tiny-bf16")
    a, b = np.stack([f32[p] for p in sorted(f32)]), np.stack([f16[p] for p in sorted(f32)])
    assert cosine(a, b).min() > 0.99 and not np.array_equal(a, b)
    assert a16["precision"] == "bf16" and a16["base_digest"] == r32.backbone_digest
    assert a16["model"]["runtime"] == "openvino" and a16["model"]["settings"]["inference_precision"] == "bf16"
    # recorded once, as a sidecar naming the fp32 file it runs; found again by its digest
    layout = resolve_store(store)
    (sidecar,) = layout.backbones.glob("*-bf16-*.json")
    variant = find_variant(layout, r16.backbone_digest)
    assert variant.path == layout.backbones / f"{sidecar.stem.rsplit('-', 2)[0]}.onnx"
    assert not list(layout.backbones.glob("*-bf16-*.onnx"))
    # checked against fp32 like int8: cosine, logistic accuracy, speeds
    c = r16.precision_check
    assert c["n_images"] == 12 and c["cosine_min"] > 0.99 and c["accuracy_loss_points"] is not None
    assert c["held_out"] is True and "bf16_accuracy" in c and c["bf16_images_per_s"] > 0
    assert set(c["speeds"]) == {"openvino fp32", "openvino bf16", "onnxruntime fp32"}
    again = run(photos, store, tiny_onnx, precision="bf16")
    assert again.n_computed == 0 and again.precision_check == c  # the check is not run twice
    # a head on bf16 features refuses fp32 ones
    fit_head("logistic", ["photos@tiny-bf16"], store=str(store), name="h16", emissions=False, test_size=0.25)
    assert evaluate("h16", ["photos@tiny-bf16"], store=str(store)).n_rows == 12
    with pytest.raises(StoreMismatchError, match=r"bf16 features of tiny-bf16 .* fp32 features of tiny"):
        evaluate("h16", ["photos@tiny"], store=str(store))


@needs_bf16
def test_score_runs_a_bf16_head_under_openvino_only(tmp_path, store, tiny_onnx):
    from conftest import via_store

    fit_head = via_store("fit_head")
    from conftest import via_store

    score = via_store("score")

    photos = make_class_folders(tmp_path / "photos", n_per_class=6)
    run(photos, store, tiny_onnx, precision="bf16", n_check=0)
    fit_head("logistic", ["photos@tiny-bf16"], store=str(store), name="h16", emissions=False, test_size=0.25)
    new = make_class_folders(tmp_path / "new", n_per_class=2, seed=5)
    r = score(str(new), str(tmp_path / "p.csv"), head="h16", store=str(store), emissions=False)
    assert r.n_computed == 4
    with pytest.raises(InvalidOptionError, match="computed by openvino; onnxruntime would compute other"):
        score(
            str(new),
            str(tmp_path / "q.csv"),
            head="h16",
            store=str(store),
            emissions=False,
            force=True,
            runtime="onnxruntime",
        )


@needs_openvino
def test_score_with_openvino_gives_the_same_predictions(tmp_path, scoring_store):
    from typer.testing import CliRunner

    from featstore.scoring.tables import read_predictions
    from featstore_cli.app import app

    store, _ = scoring_store
    new = make_class_folders(tmp_path / "new", classes=("x",), n_per_class=5, seed=3)
    out = {}
    for runtime in ("onnxruntime", "openvino"):
        path = tmp_path / f"{runtime}.csv"
        args = ["score", "--input", str(new), "--output", str(path), "--head", "logi", "--store", str(store)]
        r = CliRunner().invoke(app, [*args, "--no-emissions", "-q", "--runtime", runtime, "--json"])
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["n_computed"] == 5
        out[runtime] = read_predictions(path)
    a, b = out["onnxruntime"], out["openvino"]
    assert [r["prediction"] for r in a] == [r["prediction"] for r in b]
    prob = [[float(r["probability"]) for r in rows] for rows in (a, b)]
    np.testing.assert_allclose(prob[0], prob[1], rtol=1e-5, atol=1e-6)


@needs_openvino
def test_openvino_telemetry_stays_off(tmp_path):
    """featstore imports OpenVINO with its telemetry package hidden: the conversion tools bind
    their no-op stand-in, and nothing is written under the user's home."""
    code = (
        "import sys\n"
        "from featstore.inference.openvino_runtime import openvino\n"
        "openvino()\n"
        "import openvino.tools.ovc.telemetry_utils as t\n"
        "print(t.tm.__name__, 'openvino_telemetry' in sys.modules)\n"
    )
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["openvino.tools.ovc.telemetry_stub", "False"]
    assert not (tmp_path / "intel").exists()


def test_a_faster_other_runtime_is_a_warning():
    from featstore.inference.precision import runtime_warning, speed_warning
    from featstore.inference.variants import ModelVariant

    check = {
        "n_images": 100,
        "runtime": "openvino",
        "fp32_images_per_s": 20.0,
        "int8_images_per_s": 60.0,
        "speeds": {"openvino fp32": 20.0, "openvino int8": 60.0, "onnxruntime int8": 80.0},
    }
    v = ModelVariant(None, "int8", "d", "b", "", check=check, runtime="openvino")
    assert runtime_warning(v).startswith(
        "onnxruntime ran this int8 model at 80.0 images/s against 60.0 for openvino"
    )
    assert speed_warning(v) is None
    close = {**check, "speeds": {**check["speeds"], "onnxruntime int8": 65.0}}
    few = {**check, "n_images": 12}
    bf16 = {
        "n_images": 100,
        "runtime": "openvino",
        "bf16_images_per_s": 50.0,
        "speeds": {"onnxruntime fp32": 90.0},
    }
    for c, precision in ((close, "int8"), (few, "int8"), (bf16, "bf16")):
        assert runtime_warning(ModelVariant(None, precision, "d", "b", "", check=c)) is None
