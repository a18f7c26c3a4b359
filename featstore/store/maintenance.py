"""`featstore store ls|show|rm|verify|compact`: listing, describing, removing, verifying and
compacting what the store holds. A damaged file is reported, never a crash."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from featstore.errors import InvalidOptionError, StoreError
from featstore.files import sha256_file
from featstore.options import Record
from featstore.store import commits, shards
from featstore.store.featuresets import (
    FeatureSetReader,
    accepted_checksums,
    checksum_path,
    feature_set_lock,
    file_sha256,
    rows_checksum,
)
from featstore.store.layout import StoreLayout, resolve_store
from featstore.store.parts import clear_parts, parts_dir
from featstore.store.shards import (
    CURRENT,
    feature_set_names,
    open_feature_set,
    open_set,
    read_manifest,
    set_folder,
)

StoreArg = StoreLayout | str | os.PathLike | None


@dataclass
class FeatureSetInfo(Record):
    """One row of `featstore store ls`: rows, features per row, classes, dtype, size in MB (10^6
    bytes), shards (None for a single file of the earlier layout), last update, and `status`
    ("ok", "damaged: <why>", a note of waiting parts)."""

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
    n_shards: int | None = None
    version: int | None = None


def _set_bytes(path: Path) -> int:
    """Bytes the set at single-file path `path` takes on disk (shards, manifests, or the file)."""
    folder = set_folder(path)
    if folder.is_dir():
        return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    return path.stat().st_size if path.is_file() else 0


def _feature_set_info(path: Path) -> FeatureSetInfo:
    """Describe one feature set; a set that cannot be read is a row saying so."""
    dataset, _, backbone = path.stem.partition("@")
    known = {
        "name": path.stem,
        "dataset": dataset,
        "backbone": backbone,
        "size_mb": round(_set_bytes(path) / 1e6, 3),
    }
    try:
        with open_set(path) as r:
            read = {"n_rows": len(r), "n_features": r.n_features, "n_classes": len(r.class_names)}
            manifest = getattr(r, "manifest", None)
            if manifest is not None:
                read.update(n_shards=len(manifest.shards), version=manifest.version)
            info = FeatureSetInfo(**known, **read, dtype=r.attrs.get("dtype"), updated=r.attrs.get("updated"))
    except Exception as err:  # noqa: BLE001 - ls must list damaged sets too
        damaged = f"damaged: {str(err).splitlines()[0][:120]}"
        info = FeatureSetInfo(
            **known, n_rows=None, n_features=None, n_classes=None, dtype=None, updated=None, status=damaged
        )
    if parts_dir(path).is_dir():
        info.status += " (unfinished run: parts waiting)"
    return info


def list_feature_sets(store: StoreArg = None) -> list[FeatureSetInfo]:
    """Describe every feature set of `store` (a root, a layout, or None: the default store), by
    name, in either layout; a damaged set is a row with its status, never an exception."""
    layout = resolve_store(store)
    return [_feature_set_info(layout.feature_set(name)) for name in feature_set_names(layout)]


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
    """Delete feature set `name` (its shards and manifests, or its single file and checksum) and
    the parts of an unfinished run; return the paths removed. InvalidOptionError for a path or an
    empty name, UnknownFeatureSetError when nothing of it exists, StoreLockedError while a run
    writes it."""
    layout = resolve_store(store)
    path = layout.feature_set(_check_name(name))
    folder, pdir = set_folder(path), parts_dir(path)
    if not path.exists() and not pdir.exists() and not folder.exists():
        open_feature_set(layout, name)  # raises the helpful UnknownFeatureSetError
    removed = []
    with feature_set_lock(path):
        if folder.is_dir():
            (folder / CURRENT).unlink(missing_ok=True)  # first: a reader sees no set, not half of one
            shutil.rmtree(folder)
            removed.append(str(folder))
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
class CompactResult(Record):
    """What `featstore store compact` did to one feature set: shards before and after, rows
    dropped for good, bytes before and after, the version committed (None: nothing to do)."""

    name: str
    shards_before: int
    shards_after: int
    rows_dropped: int
    mb_before: float
    mb_after: float
    version: int | None


def compact_feature_sets(store: StoreArg = None, names: list[str] | None = None) -> list[CompactResult]:
    """Merge the small shards of each feature set `names` (default: all) into full ones, drop
    the rows of files that are gone for good, and convert sets of the single-file layout; each
    under its lock (StoreLockedError while a run writes it). UnknownFeatureSetError for a name
    the store lacks."""
    layout = resolve_store(store)
    out = []
    for name in names or feature_set_names(layout):
        path = layout.feature_set(_check_name(name))
        if not shards.exists(path):
            open_feature_set(layout, name)  # raises the helpful UnknownFeatureSetError
        with feature_set_lock(path):
            before = read_manifest(set_folder(path))
            n_before, mb_before = (len(before.shards) if before else 1), _set_bytes(path) / 1e6
            done = commits.compact(path)
            after = read_manifest(set_folder(path))
            out.append(
                CompactResult(
                    name, n_before, len(after.shards), done.n_dropped if done else 0, round(mb_before, 3),
                    round(_set_bytes(path) / 1e6, 3), done.version if done else None,
                )
            )  # fmt: skip
    return out


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


def _file_problems(r: FeatureSetReader) -> list[str]:
    """What is wrong inside one feature set or shard file: alignment, checksums, values. Reads
    every feature."""
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
    return problems


def _rows_problems(rows, attrs: dict) -> list[str]:
    """What is wrong with a set's rows as a whole: duplicate (path, view) pairs, view indices
    and labels outside what the attributes allow."""
    problems, n = [], len(rows)
    views = rows.view.tolist()
    if len(set(zip(rows.paths, views, strict=True))) != n:
        problems.append("a (path, view) pair appears twice")
    augment = attrs.get("augment")
    copies = int(augment.get("copies", 0)) if isinstance(augment, dict) else 0
    if n and (min(views) < 0 or max(views) > copies):
        problems.append(f"view indices outside 0..{copies} (the recorded augmentation copies)")
    n_classes = len(attrs.get("class_names") or [])
    if n and (rows.labels.max() >= n_classes or rows.labels.min() < -1):
        problems.append("labels outside the class list")
    return problems


def _sharded_problems(folder: Path, check: FileCheck) -> None:
    """Check a sharded set: its manifest, every shard's bytes and content, its rows as a whole;
    files no manifest names are a note (the next writer deletes them)."""
    try:
        manifest = read_manifest(folder)
    except StoreError as err:
        check.problems.append(str(err))
        return
    for s in manifest.shards:
        shard = folder / s.file
        if not shard.is_file():
            check.problems.append(f"shard {s.file} is missing")
            continue
        if file_sha256(shard) != s.sha256:
            check.problems.append(f"shard {s.file}: whole-file checksum does not match: bytes were changed")
        try:
            with FeatureSetReader(shard) as r:
                check.problems += [f"shard {s.file}: {p}" for p in _file_problems(r)]
                if len(r) != s.n_rows or any(not 0 <= i < s.n_rows for i in s.dropped):
                    check.problems.append(f"shard {s.file}: rows do not match the manifest")
        except Exception as err:  # noqa: BLE001 - any failure to read is damage to report
            check.problems.append(f"shard {s.file} unreadable: {str(err).splitlines()[0]}")
    if check.problems:
        return
    with shards.ShardedReader(folder, manifest) as r:
        rows = r.rows()
        check.problems += _rows_problems(rows, r.attrs)
        if shards.rows_key(rows) != manifest.rows_key:
            check.problems.append("the rows do not match the manifest's row checksum")
    n_orphans = sum(
        1
        for p in folder.iterdir()
        if p.name not in {CURRENT, manifest.file, *(s.file for s in manifest.shards)}
    )
    if n_orphans:
        check.notes.append(f"{n_orphans} file(s) of an interrupted write; the next write deletes them")


def verify_feature_set(path: Path) -> FileCheck:
    """Read every byte of a feature set (its shards, or its single file) and check checksums,
    shapes and values; a set that cannot be read is a problem, never an exception."""
    folder = set_folder(path)
    if shards.is_sharded(path):
        check = FileCheck(str(folder), "feature set", True)
        _sharded_problems(folder, check)
    else:
        check = FileCheck(str(path), "feature set", True)
        accepted = accepted_checksums(path)
        if not accepted:
            check.notes.append("no whole-file checksum recorded; checked the content checksums only")
        elif file_sha256(path) not in accepted:
            check.problems.append("whole-file checksum does not match: bytes of the file were changed")
        try:
            with FeatureSetReader(path) as r:
                check.problems += _file_problems(r) + _rows_problems(r.rows(), r.attrs)
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
    """Every feature set checked, and a note for parts of a first run not finished yet."""
    if not layout.features.is_dir():
        return []
    names = set(feature_set_names(layout)) | {p.stem for p in layout.features.glob("*.parts")}
    checks = []
    for name in sorted(names):
        path = layout.feature_set(name)
        if shards.exists(path):
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
