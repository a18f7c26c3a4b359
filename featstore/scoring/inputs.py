"""The images a scoring job reads (a folder, a .csv or .txt list, a glob, one image, a sequence of
paths), in table order, duplicates left out."""

from __future__ import annotations

import csv
import glob
import os
from collections.abc import Iterable
from pathlib import Path

from featstore.data.scan import IMAGE_EXTENSIONS, ImageItem, Skipped, walk_images
from featstore.errors import DatasetError


def _list_file(path: Path) -> list[str]:
    """Entries of a CSV with a `path` column, or of a text file with one path per line."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"cannot read the list of paths {path}: {err}") from err
    if path.suffix.lower() != ".csv":
        return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    try:
        rows = list(csv.reader(text.splitlines()))
    except csv.Error as err:
        raise DatasetError(f"cannot read CSV {path}: {err}") from err
    header = [h.strip().lower() for h in rows[0]] if rows else []
    if "path" not in header:
        raise DatasetError(
            f"CSV {path} must start with a header row naming a `path` column; "
            f"found {','.join(rows[0]) if rows else '(empty file)'}"
        )
    col = header.index("path")
    return [row[col].strip() for row in rows[1:] if len(row) > col and row[col].strip()]


def _entries(text: str, path: Path, skipped: list[Skipped]) -> list[tuple[str, Path]]:
    """(shown path, file) of every entry `input` names, in table order."""
    if path.is_dir():
        n = len(str(path)) + 1
        rels = sorted((f[n:], Path(f)) for f in walk_images(path, skipped))
        return [(os.path.join(text, rel), f) for rel, f in rels]
    if path.is_file() and path.suffix.lower() in (".csv", ".txt"):
        entries = []
        for raw in _list_file(path):
            p = Path(raw).expanduser()
            entries.append((raw, p if p.is_absolute() else path.parent / p))
        return entries
    if path.is_file():
        return [(text, path)]
    if glob.has_magic(text):
        matches = sorted(glob.glob(os.path.expanduser(text), recursive=True))
        entries = [(m, Path(m)) for m in matches if os.path.isfile(m)]
        if not entries:
            raise DatasetError(f"no file matches the pattern {text}")
        return entries
    raise DatasetError(
        f"input {path} does not exist (give a folder, a .csv or .txt list, a glob or an image)"
    )


def _items(entries: Iterable[tuple[str, Path]], skipped: list[Skipped]) -> list[ImageItem]:
    """One item per file, the first entry of each; later duplicates go to `skipped`."""
    items, seen = [], {}
    for n, (shown, file) in enumerate(entries, start=1):
        key = os.path.normpath(os.path.abspath(file))
        if key in seen:
            skipped.append(Skipped(shown, f"entry {n}: duplicate of entry {seen[key]}"))
            continue
        seen[key] = n
        items.append(ImageItem(Path(key), shown, -1))
    return items


def list_inputs(input: str | os.PathLike) -> tuple[list[ImageItem], list[Skipped]]:
    """Return the images to score in table order, and the entries left out: a folder (sorted by
    path), a `.csv` with a `path` column or a `.txt` of paths (list order, relative to the
    list's folder; a missing file becomes an error row), a glob, or one image. DatasetError
    when the input does not exist or holds no image."""
    text = os.fspath(input)
    path = Path(text).expanduser()
    skipped: list[Skipped] = []
    items = _items(_entries(text, path, skipped), skipped)
    if not items:
        where = "" if path.is_dir() else " (the list is empty)"
        raise DatasetError(
            f"no images found in {text}{where}; looked for {', '.join(sorted(IMAGE_EXTENSIONS))}"
        )
    return items, skipped


def items_of(paths: Iterable[str | os.PathLike]) -> list[ImageItem]:
    """One item per path of `paths`, in order, duplicates kept; a missing file is an error row."""
    out = []
    for p in paths:
        shown = os.fspath(p)
        out.append(ImageItem(Path(os.path.abspath(Path(shown).expanduser())), shown, -1))
    return out
