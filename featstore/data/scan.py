"""Which files make a dataset: class folders, train/val/test folders, CSV manifests, path lists,
with the files left out and why. Reads no pixels."""

from __future__ import annotations

import contextlib
import csv
import gc
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from featstore.errors import DatasetError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
#: Folder names and manifest split values (matched case-insensitively) and the part each one means.
SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a dataset's bookkeeping makes hundreds of
    thousands of small objects (each collection walks all of them: a third of the time of an
    unchanged 100,000-image run); restored after. Not around work that runs for long."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


class ImageItem(NamedTuple):
    """One image file of a dataset: its path (as the scan found it: a Path, or a string for the
    many files of a folder walk), path relative to the dataset, label, split. A named tuple: a
    scan makes one per file, a million at a time."""

    path: Path | str
    rel: str
    label: int
    split: str = ""


@dataclass(frozen=True)
class Skipped:
    """A file left out of a run, and why."""

    path: str
    reason: str

    def to_dict(self) -> dict:
        """Return a JSON-ready dict."""
        return {"path": self.path, "reason": self.reason}


@dataclass
class Dataset:
    """The images of one dataset; `label` indexes `class_names` (-1: unlabelled)."""

    name: str
    root: Path
    layout: str
    class_names: list[str]
    items: list[ImageItem]
    skipped: list[Skipped] = field(default_factory=list)
    empty_classes: list[str] = field(default_factory=list)

    @property
    def has_split(self) -> bool:
        """True when the dataset's files say which split each image belongs to."""
        return any(item.split for item in self.items)


def check_name(name: str, what: str = "dataset name") -> str:
    """Return `name` if it is safe as a store file name part, else raise DatasetError."""
    if not _NAME_RE.match(name) or ".." in name:
        raise DatasetError(
            f"{what} {name!r} must start with a letter or digit and use only letters, digits "
            "and . _ + - (pass --name to choose one)"
        )
    return name


def _default_name(path: Path) -> str:
    raw = path.stem if path.is_file() else path.name
    cleaned = re.sub(r"[^A-Za-z0-9._+-]+", "_", raw).strip("._-+")
    return cleaned or "dataset"


def scan_dataset(data: str | os.PathLike, name: str | None = None) -> Dataset:
    """List the images of `data`: a folder of class folders, of train/val/test folders, of images
    (unlabelled), a CSV manifest (`path,label[,split]`) or a text list of paths.

    Split names match case-insensitively (`SPLIT_NAMES`: train/training, val/valid/validation/
    dev, test/testing). `name` is the dataset's name in the store (default: the folder's).

    Returns
    -------
    Dataset
        The images sorted by relative path, labels (-1: unlabelled) and parts, the files left
        out with their reasons, and empty class folders.

    Raises
    ------
    DatasetError
        The path does not exist, the manifest header is wrong, or no image was found.
    """
    root = Path(data).expanduser()
    if not root.exists():
        raise DatasetError(f"data path {root} does not exist")
    name = check_name(name or _default_name(root))
    if root.is_file():
        if root.suffix.lower() == ".csv":
            ds = _scan_manifest(root, name)
        elif root.suffix.lower() == ".txt":
            ds = _scan_list(root, name)
        else:
            raise DatasetError(f"{root} is a file but not a .csv manifest or .txt list of paths")
    else:
        with paused_gc():
            ds = _scan_folder(root, name)
    if not ds.items:
        raise DatasetError(f"no images found in {root} (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
    return ds


_SUFFIXES = tuple(IMAGE_EXTENSIONS)


def _images(names: list[str]) -> list[str]:
    """The names of `names` that are image files by their extension (hidden files left out)."""
    return [n for n in names if n.lower().endswith(_SUFFIXES) and n[:1] != "."]


def walk_images(folder: Path, skipped: list[Skipped]) -> list[str]:
    """Paths (strings, `folder` joined with the rest) of the image files below `folder`, in the
    order of the folder walk (sort them for a stable order), following symlinks but never around
    a loop (skipped)."""
    found, seen = [], set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True, onerror=None):
        real = os.path.realpath(dirpath)
        if real in seen:
            skipped.append(Skipped(dirpath, "symlink loop: folder already visited"))
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        prefix = os.path.join(dirpath, "")
        found.extend([prefix + f for f in _images(filenames)])
    return found


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _subdirs(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as err:
        raise DatasetError(f"cannot list {folder}: {err.strerror}") from err


def _scan_folder(root: Path, name: str) -> Dataset:
    root = root.absolute()
    skipped: list[Skipped] = []
    subdirs = _subdirs(root)
    top_files = [root / n for n in sorted(_images(os.listdir(root))) if (root / n).is_file()]
    split_dirs = [d for d in subdirs if d.name.lower() in SPLIT_NAMES]
    if split_dirs:
        layout = "splits"
        for d in subdirs:
            if d not in split_dirs:
                skipped.append(Skipped(_rel(d, root), "folder beside train/val/test is not a split"))
        class_dirs = [(SPLIT_NAMES[s.name.lower()], c) for s in split_dirs for c in _subdirs(s)]
    elif subdirs:
        layout = "folders"
        class_dirs = [("", d) for d in subdirs]
    else:
        layout = "flat"
        class_dirs = []
    class_names = sorted({d.name for _, d in class_dirs})
    index = {c: i for i, c in enumerate(class_names)}
    items: list[ImageItem] = []
    counts = dict.fromkeys(class_names, 0)
    cut = len(str(root)) + 1
    for split, d in class_dirs:
        found, label = walk_images(d, skipped), index[d.name]
        if os.sep == "/":
            items.extend([ImageItem(p, p[cut:], label, split) for p in found])
        else:
            items.extend([ImageItem(p, p[cut:].replace(os.sep, "/"), label, split) for p in found])
        counts[d.name] += len(found)
    if layout == "flat":
        items = [ImageItem(p, _rel(p, root), -1) for p in top_files]
    else:
        skipped.extend(Skipped(_rel(p, root), "image not inside a class folder") for p in top_files)
    items.sort(key=lambda it: it.rel)
    empty = [c for c, n in counts.items() if n == 0]
    return Dataset(name, root.absolute(), layout, class_names, items, skipped, empty)


def _read_rows(path: Path) -> list[list[str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            return [row for row in csv.reader(f)]
    except UnicodeDecodeError as err:
        raise DatasetError(f"{path} is not UTF-8 text: {err}") from err
    except (OSError, csv.Error) as err:
        raise DatasetError(f"cannot read manifest {path}: {err}") from err


def _resolve_listed(raw: str, base: Path) -> Path:
    p = Path(raw).expanduser()
    return p if p.is_absolute() else base / p


def _scan_manifest(path: Path, name: str) -> Dataset:
    rows = _read_rows(path)
    if not rows:
        raise DatasetError(f"manifest {path} is empty; expected a header path,label[,split]")
    header = [h.strip().lower() for h in rows[0]]
    if "path" not in header or "label" not in header:
        raise DatasetError(
            f"manifest {path} must start with a header naming columns path,label[,split]; "
            f"found {','.join(rows[0]) or '(empty line)'}"
        )
    ip, il = header.index("path"), header.index("label")
    isp = header.index("split") if "split" in header else None
    base = path.parent
    skipped: list[Skipped] = []
    seen: dict[str, int] = {}
    entries = []
    for n, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) <= max(ip, il, isp or 0):
            skipped.append(Skipped(f"{path.name}:{n}", "row has too few columns"))
            continue
        raw, label = row[ip].strip(), row[il].strip()
        split = row[isp].strip().lower() if isp is not None else ""
        if split and split not in SPLIT_NAMES:
            skipped.append(Skipped(raw, f"line {n}: unknown split {split!r} (use {', '.join(SPLIT_NAMES)})"))
            continue
        file = _resolve_listed(raw, base)
        key = os.path.normpath(str(file))
        if key in seen:
            skipped.append(Skipped(raw, f"line {n}: duplicate of line {seen[key]}"))
            continue
        seen[key] = n
        if not file.is_file():
            skipped.append(Skipped(raw, f"line {n}: file not found"))
            continue
        entries.append((file, raw, label, SPLIT_NAMES.get(split, "")))
    class_names = sorted({label for *_, label, _ in entries if label})
    index = {c: i for i, c in enumerate(class_names)}
    items = [ImageItem(f, raw, index.get(lab, -1), sp) for f, raw, lab, sp in entries]
    items.sort(key=lambda it: it.rel)
    return Dataset(name, base.absolute(), "manifest", class_names, items, skipped, [])


def _scan_list(path: Path, name: str) -> Dataset:
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"cannot read path list {path}: {err}") from err
    skipped: list[Skipped] = []
    items, seen = [], set()
    for n, raw in enumerate((ln.strip() for ln in lines), start=1):
        if not raw or raw.startswith("#"):
            continue
        file = _resolve_listed(raw, path.parent)
        if os.path.normpath(str(file)) in seen:
            skipped.append(Skipped(raw, f"line {n}: duplicate"))
        elif not file.is_file():
            skipped.append(Skipped(raw, f"line {n}: file not found"))
        else:
            seen.add(os.path.normpath(str(file)))
            items.append(ImageItem(file, raw, -1))
    items.sort(key=lambda it: it.rel)
    return Dataset(name, path.parent.absolute(), "list", [], items, skipped, [])
