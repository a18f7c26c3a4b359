"""Optional packages: featstore runs cached backbones where TensorFlow, Keras, tf2onnx,
codecarbon and skl2onnx are not installed (a GPU machine with the runtime alone)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import build_tiny_onnx, make_class_folders

from featstore.deps import available
from featstore.emissions import MISSING_NOTE, track_emissions

BLOCKED = ("tensorflow", "keras", "tf2onnx", "codecarbon", "skl2onnx")
#: Runs featstore commands (separated by `--next`) in one process where the BLOCKED packages
#: are missing: their imports fail and importlib.metadata does not know them. Each command's
#: output ends with a line `=== exit N`.
RUNNER = f"""
import importlib.metadata as md
import sys

BLOCKED = {BLOCKED!r}
for name in BLOCKED:
    sys.modules[name] = None
_version = md.version


def version(dist):
    if dist.lower().replace("_", "-") in BLOCKED:
        raise md.PackageNotFoundError(dist)
    return _version(dist)


md.version = version
from featstore_cli.app import app

commands, current = [], []
for arg in sys.argv[1:]:
    if arg == "--next":
        commands.append(current)
        current = []
    else:
        current.append(arg)
commands.append(current)
for args in commands:
    try:
        app(args, prog_name="featstore")
        code = 0
    except SystemExit as stop:
        code = stop.code or 0
    sys.stdout.flush()
    sys.stderr.flush()
    print(f"=== exit {{code}}", flush=True)
"""


def without_heavy_packages(*commands: list, cwd) -> list[tuple[int, str]]:
    """Run featstore `commands` in one process where the BLOCKED packages are missing; return
    (exit code, stdout) per command, and fail on a traceback."""
    args = [str(a) for cmd in commands for a in [*cmd, "--next"]][:-1]
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )
    assert "Traceback" not in done.stderr, done.stderr
    parts = done.stdout.split("=== exit ")
    out, results = parts[0], []
    for part in parts[1:]:
        code, _, rest = part.partition("\n")
        results.append((int(code), out))
        out = rest
    assert len(results) == len(commands), done.stdout + done.stderr
    return results


def test_available(monkeypatch):
    assert available("json") and not available("no_such_package") and not available("no_such_package.sub")
    monkeypatch.setitem(sys.modules, "codecarbon", None)
    assert not available("codecarbon") and not available("codecarbon.core")


def test_emissions_without_codecarbon_are_a_note(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "codecarbon", None)
    with track_emissions(True, "fra", tmp_path) as tracker:
        value = sum(range(1000))
    assert value == 499500
    assert tracker.result.energy_kwh is None and tracker.result.note == MISSING_NOTE
    with track_emissions(True, None, tmp_path, lazy=True) as tracker:
        pass
    assert "nothing was computed" in tracker.result.note


def test_cached_onnx_backbone_extracts_fits_and_scores_without_heavy_packages(tmp_path):
    build_tiny_onnx(tmp_path / "tiny.onnx")
    make_class_folders(tmp_path / "photos", n_per_class=6)
    make_class_folders(tmp_path / "new", n_per_class=2, seed=5)
    store = ["--store", tmp_path / "store"]
    first, cached, fitted, scored = without_heavy_packages(
        ["extract", "--backbone", "tiny.onnx", "--data", "photos", *store],
        [
            "extract",
            "--backbone",
            "tiny.onnx",
            "--data",
            "photos",
            "--force",
            "--no-emissions",
            "--profile",
            *store,
        ],
        ["fit-head", "logistic", "--features", "photos@tiny", "--name", "h", "--no-emissions", *store],
        ["score", "--head", "h", "--input", "new", "--output", "p.csv", *store],
        cwd=tmp_path,
    )
    assert first[0] == 0 and "computed 12" in first[1] and MISSING_NOTE in first[1], first
    assert cached[0] == 0 and "profile:" in cached[1], cached
    assert fitted[0] == 0, fitted
    assert scored[0] == 0 and "scored 4" in scored[1] and MISSING_NOTE in scored[1], scored
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 5


@pytest.mark.slow
def test_cached_registry_backbone_extracts_without_heavy_packages(store_with_mnv2, tmp_path):
    make_class_folders(tmp_path / "photos", n_per_class=2)
    args = ["extract", "--backbone", "mobilenet_v2", "--weights", "none", "--input-size", "32"]
    ((code, out),) = without_heavy_packages(
        [*args, "--data", "photos", "--store", store_with_mnv2, "--no-emissions"], cwd=tmp_path
    )
    assert code == 0, out
