"""Fine-tune runs as `store/finetune/<run-id>/` folders, and the `finetune:<run-id>` name.

A finished run holds `meta.json` (run_id, status, classes, input_size, resize, backbone,
dataset, files_sha256, n_features, options, metrics), `classifier.onnx` ((N, S, S, 3) uint8 ->
(N, C) float32 probabilities) and `backbone.onnx` (same pixels -> (N, D) float32 features).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from featstore.errors import StoreError, UnknownRunError
from featstore.files import sha256_file, write_atomic
from featstore.store.layout import StoreLayout

PREFIX = "finetune:"
META_FILE = "meta.json"
CLASSIFIER_FILE = "classifier.onnx"
BACKBONE_FILE = "backbone.onnx"
CHECKPOINT_FILE = "best.keras"


def parse_ref(name: str) -> str | None:
    """Return the run id of `finetune:<run-id>`, or None when `name` is not such a reference."""
    if not name.startswith(PREFIX):
        return None
    run_id = name[len(PREFIX) :]
    if not run_id:
        raise UnknownRunError(f"{name!r} names no run; write finetune:<run-id> (see `featstore report`)")
    return run_id


def run_label(run_id: str) -> str:
    """The backbone label of fine-tune run `run_id` in feature set names: `finetune-<run-id>`."""
    return f"finetune-{run_id}"


def run_dir(layout: StoreLayout, run_id: str) -> Path:
    """Folder of fine-tune run `run_id`; refuses ids that would leave the finetune folder."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", run_id or ""):
        raise UnknownRunError(f"{run_id!r} is not a fine-tune run id")
    return layout.finetune / run_id


def list_runs(layout: StoreLayout) -> list[str]:
    """Ids of the fine-tune run folders in the store, sorted."""
    if not layout.finetune.is_dir():
        return []
    return sorted(p.name for p in layout.finetune.iterdir() if p.is_dir() and not p.name.startswith("."))


def read_run_meta(layout: StoreLayout, run_id: str) -> dict:
    """Return meta.json of fine-tune run `run_id`."""
    folder = run_dir(layout, run_id)
    try:
        return json.loads((folder / META_FILE).read_text())
    except FileNotFoundError:
        have = ", ".join(list_runs(layout)[:5])
        raise UnknownRunError(
            f"no fine-tune run {run_id!r} in {layout.root}"
            + (f"; some runs: {have}" if have else "; none yet")
        ) from None
    except ValueError as err:
        raise StoreError(f"{folder / META_FILE} is damaged: {err}") from err


def write_run_meta(folder: Path, meta: dict) -> None:
    """Write `meta` as `folder`'s meta.json, atomically (values JSON cannot hold become text)."""
    write_atomic(folder / META_FILE, json.dumps(meta, indent=2, default=str).encode())


def run_file(layout: StoreLayout, run_id: str, name: str) -> tuple[Path, dict]:
    """Return (path, meta) of file `name` of a finished run, checked against its recorded sha256."""
    meta = read_run_meta(layout, run_id)
    path = run_dir(layout, run_id) / name
    digest = meta.get("files_sha256", {}).get(name)
    if meta.get("status", "done") != "done" or digest is None:
        raise StoreError(
            f"fine-tune run {run_id} has no {name} (status {meta.get('status')!r}); "
            f"finish it with `featstore finetune --resume {run_id}`"
        )
    if not path.is_file():
        raise StoreError(f"{path} is missing; fine-tune run {run_id} cannot be used")
    if sha256_file(path) != digest:
        raise StoreError(f"{path} changed since the run wrote it (sha256 differs from meta.json)")
    return path, meta
