"""A CLI that answers at once: `--help`, `store ls` and an `extract` with nothing to do import no
machine-learning library, and the no-op extract opens no inference session."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import make_class_folders, via_store

#: What costs seconds (or hundreds of milliseconds) to import.
HEAVY = ("sklearn", "scipy", "tensorflow", "keras", "tf2onnx", "onnxruntime", "openvino", "ray", "matplotlib")

PROBE = """
import json, sys
sys.argv = ["featstore", *json.loads(sys.argv[1])]
from featstore_cli.app import app
try:
    app()
except SystemExit as exit:
    code = exit.code
with open({out!r}, "w") as f:
    json.dump({{"code": code, "heavy": sorted(m for m in {heavy!r} if m in sys.modules)}}, f)
"""


def imported(tmp_path, *args: str) -> dict:
    """Run `featstore ARGS` in a fresh process; return its exit code and the heavy modules it imported."""
    out = tmp_path / "probe.json"
    code = PROBE.format(out=str(out), heavy=HEAVY)
    subprocess.run(
        [sys.executable, "-c", code, json.dumps(args)], check=True, capture_output=True, timeout=300
    )
    return json.loads(out.read_text())


@pytest.mark.parametrize("args", [["--help"], ["extract", "--help"], ["fit-head", "--help"]])
def test_help_imports_nothing_heavy(tmp_path, args):
    assert imported(tmp_path, *args) == {"code": 0, "heavy": []}


def test_store_ls_and_a_noop_extract_import_nothing_heavy(tmp_path, tiny_onnx):
    photos = make_class_folders(tmp_path / "photos")
    store = tmp_path / "store"
    first = via_store("extract")(photos, str(tiny_onnx), store=store, emissions=False)
    assert first.n_computed == 8
    assert imported(tmp_path, "store", "ls", "--store", str(store)) == {"code": 0, "heavy": []}
    args = ["extract", "-b", str(tiny_onnx), "-d", str(photos), "--store", str(store), "--no-emissions", "-q"]
    assert imported(tmp_path, *args) == {"code": 0, "heavy": []}  # no session: no onnxruntime
    with open(store / "runs.jsonl") as f:
        last = json.loads(f.readlines()[-1])
    assert last["counts"]["n_computed"] == 0 and last["counts"]["n_reused"] == 8 and last["device"] is None
