"""`featstore store ls|show|rm|verify`: listing, describing, removing and verifying what the store
holds. A damaged file is reported, never a crash."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from featstore.errors import InvalidOptionError
from featstore.files import sha256_file
from featstore.options import Record
from featstore.store.featuresets import (
    FeatureSetReader,
    accepted_checksums,
    checksum_path,
    feature_set_lock,
    file_sha256,
    open_feature_set,
    rows_checksum,
)
from featstore.store.layout import StoreLayout, resolve_store
from featstore.store.parts import clear_parts, parts_dir

StoreArg = StoreLayout | str | os.PathLike | None


@dataclass
class FeatureSetInfo(Record):
    """One row of `featstore store ls`: rows, features per row, classes, dtype, size in MB (10^6
    bytes), last update, and `status` ("ok", "damaged: <why>", a note of waiting parts)."""

    name: str
    dataset: str
    backbone: str
    n_rows: int | None
    n_features: int | None
    n_classes: int | None
    dtype: str | None
    size_mb: float
    updated: str | None
    status: str = "ok"


def _feature_set_info(path: Path) -> FeatureSetInfo:
    """Describe one feature set file; a file that cannot be read is a row saying so."""
    dataset, _, backbone = path.stem.partition("@")
    known = {
        "name": path.stem,
        "dataset": dataset,
        "backbone": backbone,
        "size_mb": round(path.stat().st_size / 1e6, 3),
    }
    try:
        with FeatureSetReader(path) as r:
            read = {"n_rows": len(r), "n_features": r.n_features, "n_classes": len(r.class_names)}
            info = FeatureSetInfo(**known, **read, dtype=r.attrs.get("dtype"), updated=r.attrs.get("updated"))
    except Exception as err:  # noqa: BLE001 - ls must list damaged files too
        damaged = f"damaged: {str(err).splitlines()[0][:120]}"
        info = FeatureSetInfo(
            **known, n_rows=None, n_features=None, n_classes=None, dtype=None, updated=None, status=damaged
        )
    if parts_dir(path).is_dir():
        info.status += " (unfinished run: parts waiting)"
    return info


def list_feature_sets(store: StoreArg = None) -> list[FeatureSetInfo]:
    """Describe every `features/*.h5` file of `store` (a root, a layout, or None: the default
    store), by name; a damaged file is a row with its status, never an exception."""
    layout = resolve_store(store)
    if not layout.features.is_dir():
        return []
    return [_feature_set_info(path) for path in sorted(layout.features.glob("*.h5"))]


def _check_name(name: str) -> str:
    """Refuse a feature set name that would reach outside the store's features folder."""
    if not name or name.startswith(".") or any(sep in name for sep in ("/", "\\", "\0")):
        raise InvalidOptionError("name", f"must be a feature set name such as photos@vgg16, not {name!r}")
    return name


def describe_feature_set(store: StoreArg, name: str) -> dict:
    """Everything `featstore store show` prints about feature set `name` (`dataset@backbone`):
    `name`, `path`, `n_rows`, `n_augmented`, `n_features`, `attrs`, `per_class` and `per_split`
    (view-0 rows; "(unlabelled)", "(none)") and `examples` (the first five paths).
    InvalidOptionError for a name that is a path or empty; UnknownFeatureSetError listing the sets."""
    with open_feature_set(resolve_store(store), _check_name(name)) as r:
        rows = r.rows()
        plain = rows.view == 0
        labels = rows.labels[plain]
        per_class = {c: int((labels == i).sum()) for i, c in enumerate(r.class_names)}
        if (labels < 0).any():
            per_class["(unlabelled)"] = int((labels < 0).sum())
        per_split: dict[str, int] = {}
        for s, is_plain in zip(rows.split, plain, strict=True):
            if is_plain:
                per_split[s or "(none)"] = per_split.get(s or "(none)", 0) + 1
        return {
            "name": name,
            "path": str(r.path),
            "n_rows": len(r),
            "n_augmented": int((~plain).sum()),
            "n_features": r.n_features,
            "attrs": r.attrs,
            "per_class": per_class,
            "per_split": per_split,
            "examples": rows.paths[:5],
        }


def remove_feature_set(store: StoreArg, name: str) -> list[str]:
    """Delete feature set `name`, its checksum file and the parts of an unfinished run; return the
    paths removed. InvalidOptionError for a path or an empty name, UnknownFeatureSetError when
    neither the file nor its parts exist, StoreLockedError while a run writes it."""
    layout = resolve_store(store)
    path = layout.feature_set(_check_name(name))
    pdir = parts_dir(path)
    if not path.exists() and not pdir.exists():
        open_feature_set(layout, name)  # raises the helpful UnknownFeatureSetError
    removed = []
    with feature_set_lock(path):
        if path.exists():
            path.unlink()
            removed.append(str(path))
        checksum_path(path).unlink(missing_ok=True)
        if pdir.exists():
            clear_parts(pdir)
            removed.append(str(pdir))
    path.with_suffix(".lock").unlink(missing_ok=True)
    return removed


@dataclass
class FileCheck(Record):
    """One file or folder checked by `featstore store verify`: `ok` unless `problems` (damage) holds
    something; `notes` say what is fine but worth knowing."""

    path: str
    kind: str
    ok: bool
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def done(self) -> FileCheck:
        """Set `ok` from the problems found; return self."""
        self.ok = not self.problems
        return self


def _content_problems(r: FeatureSetReader) -> list[str]:
    """What is wrong with the columns of an open feature set: alignment, checksums, values,
    duplicate (path, view) pairs, view indices and labels. Reads every feature."""
    problems = []
    n, rows = len(r), r.rows()
    if len(rows) != n or len(rows.labels) != n:
        problems.append(f"columns are not row-aligned ({n} features, {len(rows)} paths)")
    h, n_bad = hashlib.sha256(), 0
    for block in r.iter_features():
        h.update(np.ascontiguousarray(block).tobytes())
        n_bad += int((~np.isfinite(block)).any(axis=1).sum())
    if h.hexdigest() != r.attrs.get("features_sha256"):
        problems.append("features checksum does not match: data was altered")
    if rows_checksum(rows) != r.attrs.get("rows_sha256"):
        problems.append("row checksum does not match: paths, labels or digests altered")
    if n_bad:
        problems.append(f"{n_bad} rows hold NaN or infinite features")
    views = rows.view.tolist()
    if len(set(zip(rows.paths, views, strict=True))) != n:
        problems.append("a (path, view) pair appears twice")
    augment = r.attrs.get("augment")
    copies = int(augment.get("copies", 0)) if isinstance(augment, dict) else 0
    if n and (min(views) < 0 or max(views) > copies):
        problems.append(f"view indices outside 0..{copies} (the recorded augmentation copies)")
    if n and (rows.labels.max() >= len(r.class_names) or rows.labels.min() < -1):
        problems.append("labels outside the class list")
    return problems


def verify_feature_set(path: Path) -> FileCheck:
    """Read every byte of a feature set file and check its checksums, shapes and values; a file
    that cannot be read is a problem, never an exception."""
    check = FileCheck(str(path), "feature set", True)
    accepted = accepted_checksums(path)
    if not accepted:
        check.notes.append("no whole-file checksum recorded; checked the content checksums only")
    elif file_sha256(path) not in accepted:
        check.problems.append("whole-file checksum does not match: bytes of the file were changed")
    try:
        with FeatureSetReader(path) as r:
            check.problems += _content_problems(r)
    except Exception as err:  # noqa: BLE001 - any failure to read is damage to report
        check.problems.append(f"unreadable: {str(err).splitlines()[0]}")
    if parts_dir(path).is_dir():
        n_parts = len(list(parts_dir(path).glob("part-*.h5")))
        check.notes.append(f"{n_parts} parts of an unfinished run wait; the next extract resumes them")
    return check.done()


def verify_model_folder(folder: Path, kind: str) -> FileCheck:
    """Check a head or fine-tune run folder: meta.json readable and the sha256 of every file it
    records. An unfinished fine-tune run (status other than done) is a note; its model files
    are checked once it is done."""
    check = FileCheck(str(folder), kind, True)
    try:
        meta = json.loads((folder / "meta.json").read_text())
        files = meta.get("files_sha256") or {}
    except (OSError, ValueError, AttributeError) as err:
        check.problems.append(f"meta.json missing or unreadable: {str(err).splitlines()[0]}")
        files, meta = {}, {}
    status = meta.get("status", "done") if isinstance(meta, dict) else "done"
    if status != "done":  # its model files are written when it ends
        check.notes.append(
            f"unfinished (status {status!r}); `featstore finetune --resume {folder.name}` continues it"
        )
        files = {}
    for name, digest in sorted(files.items()):
        path = folder / name
        if not path.is_file():
            check.problems.append(f"{name} is missing")
        elif sha256_file(path, cached=False) != digest:
            check.problems.append(f"{name} does not match its recorded sha256")
    return check.done()


def _feature_set_checks(layout: StoreLayout) -> list[FileCheck]:
    """Every feature set file checked, and a note for parts of a first run not finished yet."""
    if not layout.features.is_dir():
        return []
    stems = {p.with_suffix("") for p in layout.features.glob("*.h5")}
    stems |= {p.with_suffix("") for p in layout.features.glob("*.parts")}
    checks = []
    for stem in sorted(stems):
        path = stem.with_suffix(".h5")
        if path.exists():
            checks.append(verify_feature_set(path))
        else:
            note = "unfinished first run; the next extract resumes it"
            checks.append(FileCheck(str(parts_dir(path)), "parts", True, notes=[note]))
    return checks


def _backbone_checks(layout: StoreLayout) -> list[FileCheck]:
    """Every exported ONNX backbone checked against the sha256 of its JSON sidecar."""
    checks = []
    if not layout.backbones.is_dir():
        return checks
    for onnx_path in sorted(layout.backbones.glob("*.onnx")):
        check = FileCheck(str(onnx_path), "backbone", True)
        meta = onnx_path.with_suffix(".json")
        try:
            info = json.loads(meta.read_text())
            if sha256_file(onnx_path, cached=False) != info["onnx_sha256"]:
                check.problems.append("ONNX file does not match its recorded sha256")
        except (OSError, ValueError, KeyError) as err:
            check.problems.append(f"sidecar {meta.name} missing or unreadable: {err}")
        checks.append(check.done())
    return checks


def _model_folders(parent: Path, kind: str, skip: tuple[str, ...] = ()) -> list[FileCheck]:
    """Every head or fine-tune folder under `parent` checked; a dot-folder left by an
    interrupted run is a note."""
    checks = []
    if not parent.is_dir():
        return checks
    for folder in sorted(parent.iterdir()):
        if not folder.is_dir() or folder.name in skip:
            continue
        if folder.name.startswith("."):
            note = "temporary folder of an interrupted run (never used); safe to delete"
            checks.append(FileCheck(str(folder), "leftover", True, notes=[note]))
            continue
        checks.append(verify_model_folder(folder, kind))
    return checks


def _run_log_checks(layout: StoreLayout) -> list[FileCheck]:
    """The run log checked line by line; unreadable lines (a run killed while logging) are a note."""
    if not layout.runs.is_file():
        return []
    check = FileCheck(str(layout.runs), "run log", True)
    bad = 0
    for line in layout.runs.read_bytes().splitlines():
        try:
            json.loads(line)
        except ValueError:
            bad += 1
    if bad:
        check.notes.append(f"{bad} unreadable line(s) (a run killed while logging); they are ignored")
    return [check]


def verify_store(store: StoreArg = None) -> list[FileCheck]:
    """Check every feature set, exported backbone, head, fine-tune run and the run log of `store`,
    reading every byte (no cached hashes); damage is a check with `ok` False, never an exception."""
    layout = resolve_store(store)
    return [
        *_feature_set_checks(layout),
        *_backbone_checks(layout),
        *_model_folders(layout.heads, "head", skip=("comparisons",)),
        *_model_folders(layout.finetune, "finetune run"),
        *_run_log_checks(layout),
    ]
