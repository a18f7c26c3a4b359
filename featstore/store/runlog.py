"""The run log `store/runs.jsonl`: one JSON object per command run, appended atomically.

Imports `layout` only. A line is written with one `write` call under an flock, so concurrent
runs never interleave; a reader skips a truncated last line left by a killed run.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
import uuid
from pathlib import Path

from featstore.store.layout import StoreLayout


def new_run_id(command: str) -> str:
    """Return a fresh id such as `extract-20261122-181500-3f2a`."""
    return f"{command}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"


def _jsonable(value):
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def record_run(layout: StoreLayout, record: dict) -> dict:
    """Append `record` (with time and featstore version added) to the run log; return it."""
    from featstore import __version__

    full = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "featstore_version": __version__, **record}
    line = (json.dumps(full, default=_jsonable, ensure_ascii=False) + "\n").encode()
    layout.root.mkdir(parents=True, exist_ok=True)
    fd = os.open(layout.runs, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, line)
    finally:
        os.close(fd)
    return full


def read_runs(layout: StoreLayout) -> tuple[list[dict], int]:
    """Return the logged runs and how many lines could not be read (e.g. a truncated last line)."""
    if not layout.runs.is_file():
        return [], 0
    runs, bad = [], 0
    for raw in layout.runs.read_bytes().splitlines():
        if not raw.strip():
            continue
        try:
            runs.append(json.loads(raw))
        except ValueError:
            bad += 1
    return runs, bad
