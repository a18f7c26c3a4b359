"""The GPU bench bundle (bench/gpu): pieces that join back to the same sha256, wheels checked
against their RECORD, models redrawn the same way twice, and the device script's CPU rows."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, build_tiny_onnx, make_class_folders

GPU = REPO / "bench" / "gpu"
sys.path.insert(0, str(GPU))

import bundle as bd  # noqa: E402 - bench/gpu is no package; the line above finds it


def fake_wheel(folder: Path, name: str = "fakert", version: str = "0.1") -> Path:
    """A small pure-Python wheel with a correct RECORD."""
    files = {
        f"{name}/__init__.py": b"VALUE = 42\n",
        f"{name}/data.bin": np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8).tobytes(),
        f"{name}-{version}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{name}-{version}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    rows = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        rows.append(f"{path},sha256={digest},{len(data)}")
    rows.append(f"{name}-{version}.dist-info/RECORD,,")
    folder.mkdir(parents=True, exist_ok=True)
    whl = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, data in files.items():
            zf.writestr(path, data)
        zf.writestr(f"{name}-{version}.dist-info/RECORD", "\n".join(rows) + "\n")
    return whl


def test_pieces_join_back_to_the_same_sha256(tmp_path):
    src = tmp_path / "bundle.tar.xz"
    src.write_bytes(np.random.default_rng(1).integers(0, 256, 250_001, dtype=np.uint8).tobytes())
    root = tmp_path / ".gpu"
    pieces = bd.split_file(src, root, max_piece_bytes=100_000)
    assert [p["folder"] for p in pieces] == [".gpu/part0", ".gpu/part1", ".gpu/part2"]
    assert sum(p["size"] for p in pieces) == 250_001 and max(p["size"] for p in pieces) <= 100_000
    manifest = {"archive": {"sha256": bd.sha256_file(src)}, "pieces": pieces}
    joined = bd.join_pieces(manifest, root, tmp_path / "out" / "joined")
    assert bd.sha256_file(joined) == bd.sha256_file(src)

    (root / "part1" / pieces[1]["file"]).write_bytes(b"damaged")
    (root / "part2" / pieces[2]["file"]).unlink()
    assert bd.piece_status(manifest, root) == {"ok": [0], "missing": [2], "bad": [1]}
    with pytest.raises(bd.BundleError, match=r"missing \[2\] or damaged \[1\]: carry .gpu/part2, .gpu/part1"):
        bd.join_pieces(manifest, root, tmp_path / "again")


def test_a_repacked_wheel_keeps_its_files(tmp_path):
    whl = fake_wheel(tmp_path / "in")
    stored = tmp_path / "out" / whl.name
    stored.parent.mkdir()
    bd.repack_stored(whl, stored)
    assert bd.check_record(stored) == 4
    with zipfile.ZipFile(stored) as zf:
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_STORED}
    bad = tmp_path / "bad.whl"
    with zipfile.ZipFile(whl) as zin, zipfile.ZipFile(bad, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            zout.writestr(info.filename, b"VALUE = 0\n" if info.filename.endswith("__init__.py") else data)
    with pytest.raises(bd.BundleError, match="fakert/__init__.py differs from its RECORD hash"):
        bd.check_record(bad)


def test_models_are_redrawn_the_same_way_twice(tmp_path):
    src = build_tiny_onnx(tmp_path / "tiny.onnx", n_features=32)
    meta = bd.slim_model(src, tmp_path / "tiny.skeleton.onnx", key="tiny", min_values=100)
    assert [t["name"] for t in meta["tensors"]] == ["w"]  # 32x3x3x3 redrawn, the bias of 32 kept
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    assert bd.rebuild_model(tmp_path / "tiny.skeleton.onnx", meta, a) == meta["weights_sha256"]
    bd.rebuild_model(tmp_path / "tiny.skeleton.onnx", meta, b)
    from onnx import load, numpy_helper

    wa = numpy_helper.to_array(next(i for i in load(str(a)).graph.initializer if i.name == "w"))
    wb = numpy_helper.to_array(next(i for i in load(str(b)).graph.initializer if i.name == "w"))
    w0 = numpy_helper.to_array(next(i for i in load(str(src)).graph.initializer if i.name == "w"))
    assert np.array_equal(wa, wb) and wa.shape == w0.shape and not np.array_equal(wa, w0)
    assert abs(wa.std() - w0.std()) < 0.1 * w0.std() and abs(wa.mean() - w0.mean()) < 0.1 * w0.std()
    x = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    assert bd.onnx_features(a, x).shape == (3, 32)
    with pytest.raises(bd.BundleError, match="redrawn weights differ"):
        bd.rebuild_model(tmp_path / "tiny.skeleton.onnx", {**meta, "weights_sha256": "0" * 64}, b)


def test_flops_of_a_convolution(tmp_path):
    src = build_tiny_onnx(tmp_path / "tiny.onnx", n_features=8)
    assert bd.count_flops(src) == 2 * 16 * 16 * 8 * 3 * 3 * 3


def test_duplicate_nodes_are_dropped(tmp_path):
    import onnx

    src = build_tiny_onnx(tmp_path / "tiny.onnx")
    model = onnx.load(str(src))
    model.graph.node.insert(1, onnx.helper.make_node("Relu", ["xf"], ["dup"], name="dup"))
    model.graph.node.insert(2, onnx.helper.make_node("Relu", ["xf"], ["dup"], name="dup"))
    onnx.save(model, str(src))
    assert bd.drop_duplicate_nodes(src) == 1
    assert [n.name for n in onnx.load(str(src)).graph.node].count("dup") == 1


def test_device_script_runs_its_cpu_rows(tmp_path):
    """build_bundle (fake runtime wheel, tiny model, 8 photos, pieces of 8 KiB), then
    run_device.sh run --cpu-only: join, check, pip install, rebuild, bench -> results JSON."""
    models = tmp_path / "models"
    build_tiny_onnx(models / "tiny.onnx", n_features=32)
    photos = make_class_folders(tmp_path / "photos", n_per_class=4)
    root = tmp_path / "gpu-root"
    build = [
        sys.executable,
        str(GPU / "build_bundle.py"),
        "--root",
        str(root),
        "--wheel",
        str(fake_wheel(tmp_path)),
    ]
    build += ["--models-from", str(models), "--photos", str(photos), "--n-photos", "8", "--no-check-fp16"]
    done = subprocess.run(
        [*build, "--max-piece-mib", "0.008", "--check-models", ""], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    manifest = json.loads((root / "part0" / "manifest.json").read_text())
    assert len(manifest["pieces"]) >= 3 and manifest["photos"]["n"] == 8
    assert "pieces join back to sha256" in done.stdout

    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "ROOT": str(root), "DEST": str(tmp_path / "dest")}
    env.update({"SITE": str(tmp_path / "site"), "PY": sys.executable, "BUDGET_S": "120"})
    bench = ["--backbones", "tiny", "--check-models", "", "--e2e-backbone", "tiny", "--rounds", "1"]
    bench += ["--min-s", "0.01", "--n-check", "4", "--cpu-batches", "4"]
    run = subprocess.run(
        ["bash", str(GPU / "run_device.sh"), "run", "--cpu-only", *bench],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert (
        "get_available_providers:" in run.stdout and (tmp_path / "site" / "fakert" / "__init__.py").is_file()
    )
    results = json.loads((out / "gpu-results.json").read_text())
    assert results["finished"] and not results["errors"], results["errors"]
    assert [(r["engine"], r["batch"]) for r in results["raw"]] == [("ort-cpu", 4)]
    assert results["raw"][0]["images_per_s"] > 0
    (e2e,) = results["e2e"]
    assert (e2e["device"], e2e["precision"], e2e["rc"], e2e["n_computed"]) == ("cpu", "fp32", 0, 8)
    assert e2e["profile"]["stages"] and e2e["bound"] in ("decode-bound", "inference-bound")
    assert results["tensorrt"]["clear"], results["tensorrt"]
    assert (out / "bench.log").is_file() and "| tiny |" in (out / "summary.md").read_text()


def test_gpu_sections_run_on_a_stand_in_device(monkeypatch, tmp_path):
    """Sections A, D, E and F with the CPU standing in for CUDA and an ONNX session for PyTorch:
    every GPU-only code path runs here once before it runs on the device."""
    import bench_gpu
    import gpu_engines

    models = tmp_path / "models"
    build_tiny_onnx(models / "tiny.onnx", n_features=32)
    build_tiny_onnx(models / "check.onnx", n_features=8, seed=3)
    photos = make_class_folders(tmp_path / "photos", n_per_class=3)
    real = gpu_engines.ort_engine

    def on_cpu(path, device, n_threads=None):
        return real(path, "cpu", n_threads)

    monkeypatch.setattr(gpu_engines, "ort_engine", on_cpu)
    monkeypatch.setattr(bench_gpu, "ort_engine", on_cpu)
    monkeypatch.setitem(gpu_engines.TORCH_NETS, "tiny", ("tiny", "none"))
    monkeypatch.setattr(gpu_engines, "torch_engine", lambda name, half: real(models / "tiny.onnx", "cpu")[0])
    args = bench_gpu.parse_args(
        ["--models", str(models), "--photos", str(photos), "--out", str(tmp_path / "out"), "--rounds", "2"]
        + ["--min-s", "0.01", "--n-check", "4", "--cpu-batches", "8", "--reserve-s", "0", "--tail-s", "0"]
    )
    b = bench_gpu.Bench(args.out, 120)
    b.data["card"] = {"name": "stand-in", "peak_fp16_dense_tflops": 1000.0}
    infos = {"tiny": bench_gpu.model_info(models, "tiny")}
    bench_gpu.section_a(b, args, infos, True, {"check": bench_gpu.model_info(models, "check")})
    bench_gpu.section_e(b, args, infos)
    bench_gpu.section_d(b, args, infos, True)
    bench_gpu.section_f(b, args, infos)

    rows = {(r["engine"], r["precision"], r["batch_request"]) for r in b.data["raw"]}
    for engine in ("ort-cuda", "torch-cuda"):
        for prec in ("fp32", "fp16"):
            assert {(engine, prec, "128"), (engine, prec, "auto"), (engine, prec, "32")} <= rows
    assert ("ort-cpu", "fp32", "8") in rows
    assert all(r["images_per_s"] > 0 and len(r["rounds"]) >= 1 for r in b.data["raw"])
    assert all(r["share_of_fp16_peak"] is not None for r in b.data["raw"] if "cuda" in r["engine"])
    checks = {(r["backbone"], r["precision"]): r for r in b.data["correctness"]}
    assert set(checks) == {("check", "fp32"), ("check", "fp16"), ("tiny", "fp32"), ("tiny", "fp16")}
    assert checks[("tiny", "fp32")]["pass"] and checks[("tiny", "fp32")]["cosine_min"] > 0.9999
    assert [a["precision"] for a in b.data["auto_batch"]] == ["fp32", "fp16"]
    # the CPU cannot take a CUDA OrtValue: F fails alone, recorded, and nothing else did
    assert [e["what"] for e in b.data["errors"]] == ["F tiny"]
    saved = json.loads((args.out / "gpu-results.json").read_text())
    assert len(saved["raw"]) == len(b.data["raw"])
    assert "| tiny | 128 (128) | torch-cuda | fp16 |" in bench_gpu.summary(b)
