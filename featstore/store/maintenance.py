"""Looking after the feature store: listing, describing, removing and verifying what it holds.

`featstore store ls|show|rm|verify` call these. A damaged file is reported, never a crash.
Imports `store`, `layout`, `runstore` and `backbones` (for file hashes) only.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from featstore.store.featuresets import (
    FeatureSetReader,
    accepted_checksums,
    checksum_path,
    clear_parts,
    feature_set_lock,
    file_sha256,
    open_feature_set,
    parts_dir,
    rows_checksum,
)
from featstore.store.layout import StoreLayout


@dataclass
class FeatureSetInfo:
    """One row of `featstore store ls`."""

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

    def to_dict(self) -> dict:
        """Return a JSON-ready dict."""
        return asdict(self)


def _split_name(stem: str) -> tuple[str, str]:
    dataset, _, backbone = stem.partition("@")
    return dataset, backbone


def list_feature_sets(layout: StoreLayout) -> list[FeatureSetInfo]:
    """Describe every feature set file of the store; a damaged file is a row, never a crash."""
    out = []
    if not layout.features.is_dir():
        return out
    for path in sorted(layout.features.glob("*.h5")):
        dataset, backbone = _split_name(path.stem)
        size_mb = round(path.stat().st_size / 1e6, 3)
        try:
            with FeatureSetReader(path) as r:
                a = r.attrs
                info = FeatureSetInfo(
                    path.stem,
                    dataset,
                    backbone,
                    len(r),
                    r.n_features,
                    len(r.class_names),
                    a.get("dtype"),
                    size_mb,
                    a.get("updated"),
                )
        except Exception as err:  # noqa: BLE001 - ls must list damaged files too
            info = FeatureSetInfo(
                path.stem,
                dataset,
                backbone,
                None,
                None,
                None,
                None,
                size_mb,
                None,
                f"damaged: {str(err).splitlines()[0][:120]}",
            )
        if parts_dir(path).is_dir():
            info.status += " (unfinished run: parts waiting)"
        out.append(info)
    return out


def describe_feature_set(layout: StoreLayout, name: str) -> dict:
    """Return everything `featstore store show` prints about feature set `name`.

    `per_class` and `per_split` count images (view 0 rows); `n_augmented` counts the rows of
    augmented views.
    """
    with open_feature_set(layout, name) as r:
        rows = r.rows()
        classes = r.class_names
        plain = rows.view == 0
        labels = rows.labels[plain]
        per_class = {c: int((labels == i).sum()) for i, c in enumerate(classes)}
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


def remove_feature_set(layout: StoreLayout, name: str) -> list[str]:
    """Delete feature set `name` and its unfinished parts; return the paths removed."""
    path = layout.feature_set(name)
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
class FileCheck:
    """One file checked by `featstore store verify`."""

    path: str
    kind: str
    ok: bool
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """Return a JSON-ready dict."""
        return asdict(self)


def verify_feature_set(path: Path) -> FileCheck:
    """Read every byte of a feature set file and check checksums, shapes and values."""
    check = FileCheck(str(path), "feature set", True)
    accepted = accepted_checksums(path)
    if not accepted:
        check.notes.append("no whole-file checksum recorded; checked the content checksums only")
    elif file_sha256(path) not in accepted:
        check.problems.append("whole-file checksum does not match: bytes of the file were changed")
    try:
        with FeatureSetReader(path) as r:
            n = len(r)
            rows = r.rows()
            if len(rows) != n or len(rows.labels) != n:
                check.problems.append(f"columns are not row-aligned ({n} features, {len(rows)} paths)")
            h = hashlib.sha256()
            n_bad = 0
            for block in r.iter_features():
                h.update(np.ascontiguousarray(block).tobytes())
                n_bad += int((~np.isfinite(block)).any(axis=1).sum())
            if h.hexdigest() != r.attrs.get("features_sha256"):
                check.problems.append("features checksum does not match: data was altered")
            if rows_checksum(rows) != r.attrs.get("rows_sha256"):
                check.problems.append("row checksum does not match: paths, labels or digests altered")
            if n_bad:
                check.problems.append(f"{n_bad} rows hold NaN or infinite features")
            views = rows.view.tolist()
            if len(set(zip(rows.paths, views, strict=True))) != n:
                check.problems.append("a (path, view) pair appears twice")
            augment = r.attrs.get("augment")
            copies = int(augment.get("copies", 0)) if isinstance(augment, dict) else 0
            if n and (min(views) < 0 or max(views) > copies):
                check.problems.append(f"view indices outside 0..{copies} (the recorded augmentation copies)")
            nc = len(r.class_names)
            if n and (rows.labels.max() >= nc or rows.labels.min() < -1):
                check.problems.append("labels outside the class list")
    except Exception as err:  # noqa: BLE001 - any failure to read is damage to report
        check.problems.append(f"unreadable: {str(err).splitlines()[0]}")
    if parts_dir(path).is_dir():
        n_parts = len(list(parts_dir(path).glob("part-*.h5")))
        check.notes.append(f"{n_parts} parts of an unfinished run wait; the next extract resumes them")
    check.ok = not check.problems
    return check


def verify_model_folder(folder: Path, kind: str) -> FileCheck:
    """Check a head or fine-tune run folder: meta.json readable and every recorded file's sha256."""
    from featstore.backbones.registry import sha256_file

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
    check.ok = not check.problems
    return check


def _model_folders(parent: Path, kind: str, skip: tuple[str, ...] = ()) -> list[FileCheck]:
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


def verify_store(layout: StoreLayout) -> list[FileCheck]:
    """Check every feature set, exported backbone, head, fine-tune run and the run log of the store."""
    from featstore.backbones.registry import sha256_file

    checks: list[FileCheck] = []
    if layout.features.is_dir():
        names = {p.with_suffix("") for p in layout.features.glob("*.h5")}
        names |= {p.with_suffix("") for p in layout.features.glob("*.parts")}
        for stem in sorted(names):
            path = stem.with_suffix(".h5")
            if path.exists():
                checks.append(verify_feature_set(path))
            else:
                checks.append(
                    FileCheck(
                        str(parts_dir(path)),
                        "parts",
                        True,
                        notes=["unfinished first run; the next extract resumes it"],
                    )
                )
    if layout.backbones.is_dir():
        for onnx_path in sorted(layout.backbones.glob("*.onnx")):
            c = FileCheck(str(onnx_path), "backbone", True)
            meta = onnx_path.with_suffix(".json")
            try:
                info = json.loads(meta.read_text())
                if sha256_file(onnx_path, cached=False) != info["onnx_sha256"]:
                    c.problems.append("ONNX file does not match its recorded sha256")
            except (OSError, ValueError, KeyError) as err:
                c.problems.append(f"sidecar {meta.name} missing or unreadable: {err}")
            c.ok = not c.problems
            checks.append(c)
    checks += _model_folders(layout.heads, "head", skip=("comparisons",))
    checks += _model_folders(layout.finetune, "finetune run")
    if layout.runs.is_file():
        c = FileCheck(str(layout.runs), "run log", True)
        lines = layout.runs.read_bytes().splitlines()
        bad = 0
        for line in lines:
            try:
                json.loads(line)
            except ValueError:
                bad += 1
        if bad:
            c.notes.append(f"{bad} unreadable line(s) (a run killed while logging); they are ignored")
        checks.append(c)
    return checks
