"""Fitted heads as `store/heads/<head-id>/` folders, built aside and renamed into place under a
claim on the name.

A store is data, never code: an estimator is saved with skops.io (`model.skops`), which loads
without unpickling and builds only the types of `TRUSTED_MODULES`; a file naming any other
type is refused before anything is built. Heads saved by earlier versions as pickles
(`model.joblib`) load only after `featstore heads trust ID`, which converts them. The sha256 of
every model file is checked against meta.json first; an estimator that keeps files outside the
model file declares `save_files(folder)` and `load_files(folder)`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
import uuid
from pathlib import Path

from featstore.errors import HeadError, StoreError, UnknownHeadError
from featstore.files import claim, fsync_dir, new_temp, sha256_file, write_atomic
from featstore.store.layout import StoreLayout

MODEL_FILE = "model.skops"
#: The pickle earlier versions saved; loaded only by `trust_head`.
PICKLE_FILE = "model.joblib"
#: Types of these modules (and their submodules) are what a head may hold.
TRUSTED_MODULES = ("sklearn", "numpy", "scipy.sparse", "featstore.heads")
#: The dense head's Keras network (written by its `save_files`); kept for readers of old code.
KERAS_FILE = "model.keras"
META_FILE = "meta.json"


def new_head_id(kind: str, feature_sets: list[str]) -> str:
    """Return an id like `logistic-flowers-mobilenet_v2-20261122-193000-ab12`."""
    first = feature_sets[0].replace("@", "-")
    if len(feature_sets) > 1:
        first += f"+{len(feature_sets) - 1}"
    safe = re.sub(r"[^A-Za-z0-9._+-]+", "_", first)[:80]
    return f"{kind}-{safe}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"


def head_dir(layout: StoreLayout, head_id: str) -> Path:
    """Folder of head `head_id`; refuses ids that would leave the heads folder."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", head_id or ""):
        raise UnknownHeadError(f"{head_id!r} is not a head id (see `featstore heads ls`)")
    return layout.heads / head_id


def save_head(
    layout: StoreLayout, head_id: str, estimator, meta: dict, extra_files: dict | None = None
) -> Path:
    """Write the head's folder under a claim on its name (built aside, then renamed), with
    `extra_files` (name -> bytes) beside the model; return it. HeadError when `head_id` exists
    or another process is saving it."""
    final = head_dir(layout, head_id)
    layout.heads.mkdir(parents=True, exist_ok=True)
    taken = f"head {head_id} exists already; choose another --name or remove it"
    with claim(final, HeadError, taken):
        tmp = Path(tempfile.mkdtemp(dir=layout.heads, prefix=f".{head_id}."))
        try:
            files = _write_model(tmp, estimator)
            for name, data in (extra_files or {}).items():
                (tmp / name).write_bytes(data)
            full = {**meta, "head_id": head_id, "files_sha256": files}
            (tmp / META_FILE).write_text(json.dumps(full, indent=2, default=str))
            os.chmod(tmp, 0o755)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    fsync_dir(layout.heads)
    return final


def _write_model(folder: Path, estimator) -> dict[str, str]:
    """Save `estimator` with skops.io (and its own files) into `folder`; return {file name: sha256}."""
    import skops.io as sio

    names = list(estimator.save_files(folder)) if hasattr(estimator, "save_files") else []
    sio.dump(estimator, folder / MODEL_FILE)
    return {name: sha256_file(folder / name, cached=False) for name in [*names, MODEL_FILE]}


def _trusted(type_name: str) -> bool:
    return any(type_name == m or type_name.startswith(m + ".") for m in TRUSTED_MODULES)


def _load_model(path: Path):
    """Load a skops file, building only types of `TRUSTED_MODULES`; StoreError naming any other."""
    import skops.io as sio

    try:
        found = sio.get_untrusted_types(file=path)
    except Exception as err:  # noqa: BLE001 - any failure to parse is a damaged file
        raise StoreError(f"{path} is not a readable model file ({str(err).splitlines()[0][:160]})") from err
    foreign = [t for t in found if not _trusted(t)]
    if foreign:
        raise StoreError(
            f"{path} names types a head never holds ({', '.join(sorted(foreign)[:5])}); refusing to load it"
        )
    return sio.load(path, trusted=found)


def read_meta(layout: StoreLayout, head_id: str) -> dict:
    """Return meta.json of head `head_id`."""
    folder = head_dir(layout, head_id)
    try:
        return json.loads((folder / META_FILE).read_text())
    except FileNotFoundError:
        have = ", ".join(h["head_id"] for h in list_heads(layout)[:5])
        raise UnknownHeadError(
            f"no head {head_id!r} in {layout.root}" + (f"; some heads: {have}" if have else "; none yet")
        ) from None
    except ValueError as err:
        raise StoreError(f"{folder / META_FILE} is damaged: {err}") from err


def _check_files(folder: Path, meta: dict) -> None:
    """StoreError when a model file recorded in `meta` is missing or changed."""
    for name, digest in meta.get("files_sha256", {}).items():
        path = folder / name
        if not path.is_file():
            raise StoreError(f"{path} is missing; the head cannot be loaded")
        if sha256_file(path, cached=False) != digest:
            raise StoreError(
                f"{path} changed since it was saved (sha256 differs from meta.json); refusing to load it"
            )


def load_head(layout: StoreLayout, head_id: str):
    """Return `(estimator, meta)` of head `head_id`, every model file checked against its recorded
    sha256 first (StoreError when one is missing or changed). A head saved as a pickle by an
    earlier version is refused (StoreError) until `trust_head` converts it."""
    meta = read_meta(layout, head_id)
    folder = head_dir(layout, head_id)
    if PICKLE_FILE in meta.get("files_sha256", {}):
        raise StoreError(
            f"head {head_id} was saved by an earlier featstore as a pickle, and loading a pickle runs "
            f"whatever code it holds; if you trust where this store came from, run `featstore heads "
            f"trust {head_id}` once (it converts the head), then try again"
        )
    _check_files(folder, meta)
    estimator = _load_model(folder / MODEL_FILE)
    if hasattr(estimator, "load_files"):
        estimator.load_files(folder)
    return estimator, meta


def trust_head(layout: StoreLayout, head_id: str) -> bool:
    """Convert head `head_id` saved as a pickle by an earlier version (the user vouches for it):
    unpickle it (its sha256 checked first), save it with skops.io and update meta.json, each
    file replaced atomically. Returns False when the head needs no conversion."""
    import joblib

    meta = read_meta(layout, head_id)
    folder = head_dir(layout, head_id)
    files = dict(meta.get("files_sha256", {}))
    if PICKLE_FILE not in files:
        return False
    _check_files(folder, meta)
    estimator = joblib.load(folder / PICKLE_FILE)
    import skops.io as sio

    tmp = new_temp(folder, MODEL_FILE)
    try:
        sio.dump(estimator, tmp)
        os.replace(tmp, folder / MODEL_FILE)
    finally:
        tmp.unlink(missing_ok=True)
    del files[PICKLE_FILE]
    files[MODEL_FILE] = sha256_file(folder / MODEL_FILE, cached=False)
    write_atomic(
        folder / META_FILE, json.dumps({**meta, "files_sha256": files}, indent=2, default=str).encode()
    )
    (folder / PICKLE_FILE).unlink(missing_ok=True)
    fsync_dir(folder)
    return True


def list_heads(layout: StoreLayout) -> list[dict]:
    """Summaries of every head in the store, newest first; unreadable ones are flagged."""
    rows = []
    if not layout.heads.is_dir():
        return rows
    for folder in layout.heads.iterdir():
        if folder.name.startswith(".") or not folder.is_dir() or folder.name == "comparisons":
            continue
        try:
            meta = json.loads((folder / META_FILE).read_text())
            m = meta.get("metrics", {})
            rows.append(
                {
                    "head_id": folder.name,
                    "kind": meta.get("config", {}).get("kind"),
                    "features": "+".join(meta.get("feature_sets", [])),
                    "val_accuracy": m.get("val", {}).get("accuracy"),
                    "test_accuracy": m.get("test", {}).get("accuracy"),
                    "fit_seconds": meta.get("fit_seconds"),
                    "created": meta.get("created"),
                    "status": "ok",
                }
            )
        except (OSError, ValueError) as err:
            rows.append({"head_id": folder.name, "status": f"damaged: {err}"})
    rows.sort(key=lambda r: r.get("created") or "", reverse=True)
    return rows
