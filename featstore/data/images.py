"""Datasets of image files: scanning folders and manifests, decoding, and the prefetch pipeline.

Owns which files make a dataset (class folders, train/val/test folders, CSV manifests, path
lists), how one file becomes a (size, size, 3) uint8 RGB array, and the thread pool that reads,
hashes and decodes ahead of inference. Imports nothing from featstore but `errors`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from featstore.errors import DatasetError, InvalidOptionError
from featstore.options import Options

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
RESIZE_POLICIES = ("squash", "crop", "pad")
#: Default resize: like Keras' `load_img(target_size=...)`, the whole image squashed to a square.
DEFAULT_RESIZE = "squash"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


@dataclass(frozen=True)
class ImageItem:
    """One image file of a dataset: absolute path, path relative to the dataset, label, split."""

    path: Path
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
    """List the images of `data`: a folder of class folders, of train/val/test folders, of
    images (unlabelled), or a CSV manifest (`path,label[,split]`) or text list of paths.

    Split folders and manifest split values are matched case-insensitively: train/training,
    val/valid/validation/dev, test/testing (`SPLIT_NAMES`); each image records the part
    ("train", "val" or "test") its name means.

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
        ds = _scan_folder(root, name)
    if not ds.items:
        raise DatasetError(f"no images found in {root} (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
    return ds


def _is_image(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _walk_images(folder: Path, skipped: list[Skipped]) -> list[Path]:
    """Image files below `folder`, following symlinks but never around a loop."""
    found, seen = [], set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True, onerror=None):
        real = os.path.realpath(dirpath)
        if real in seen:
            skipped.append(Skipped(dirpath, "symlink loop: folder already visited"))
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(Path(dirpath) / f for f in sorted(filenames) if _is_image(f))
    return found


def walk_images(folder: Path, skipped: list[Skipped]) -> list[Path]:
    """Image files below `folder`, sorted, in nested folders too; symlink loops go to `skipped`."""
    return _walk_images(folder, skipped)


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _subdirs(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as err:
        raise DatasetError(f"cannot list {folder}: {err.strerror}") from err


def _scan_folder(root: Path, name: str) -> Dataset:
    skipped: list[Skipped] = []
    subdirs = _subdirs(root)
    top_files = [p for p in sorted(root.iterdir()) if p.is_file() and _is_image(p.name)]
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
    for split, d in class_dirs:
        for path in _walk_images(d, skipped):
            items.append(ImageItem(path, _rel(path, root), index[d.name], split))
            counts[d.name] += 1
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


class ImageDecodeError(Exception):
    """One file could not be turned into pixels; the message is the reason shown to users."""


def _to_rgb(img):
    from PIL import Image

    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = arr.max() if arr.size else 0
        if mode.startswith("I;16") or (mode == "I" and top > 255):
            arr = arr / 257.0
        elif mode == "F" and top <= 1.0:
            arr = arr * 255.0
        img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")
        mode = "L"
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img if mode == "RGB" else img.convert("RGB")


DECODERS = ("auto", "pillow", "simplejpeg")
_TRANSPOSE = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE"}
_TRANSPOSE.update({6: "ROTATE_270", 7: "TRANSVERSE", 8: "ROTATE_90"})


def _simplejpeg():
    try:
        import simplejpeg
    except ImportError:
        return None
    return simplejpeg


def resolve_decoder(decoder: str = "auto") -> str:
    """Return the JPEG decoder to use: `auto` is simplejpeg when installed, else pillow.

    Raises
    ------
    DatasetError
        An unknown decoder name.
    MissingDependencyError
        `simplejpeg` asked for and not installed.
    """
    if decoder not in DECODERS:
        raise DatasetError(f"--decoder must be one of {', '.join(DECODERS)}, not {decoder!r}")
    have = _simplejpeg() is not None
    if decoder == "simplejpeg" and not have:
        from featstore.errors import MissingDependencyError

        raise MissingDependencyError(
            'the simplejpeg decoder is not installed; run: pip install "featstore[fast]" (or use --decoder pillow)'
        )
    if decoder == "auto":
        return "simplejpeg" if have else "pillow"
    return decoder


def _draft_scale(w: int, h: int, want: int) -> int:
    """The JPEG DCT scale 1, 2, 4 or 8 Pillow's draft mode picks for a `want` x `want` request."""
    scale = min(w // want, h // want)
    return next((s for s in (8, 4, 2, 1) if scale >= s), 1)


def _draft_size(resize: str, size_px: int, w: int, h: int) -> int:
    """The side draft mode is asked for: the input size, or for `pad` the scaled shorter side."""
    return math.ceil(size_px * min(w, h) / max(w, h)) if resize == "pad" else size_px


def _simplejpeg_open(img, data: bytes, size_px: int, resize: str):
    """Decode an RGB JPEG with simplejpeg at Pillow's draft scale; None when it cannot.

    Same libjpeg-turbo, same integer IDCT and fancy upsampling, same power-of-two DCT scale
    as Pillow's draft mode, so the pixels are identical; EXIF orientation is applied after.
    """
    from PIL import Image

    sj = _simplejpeg()
    w, h = img.size
    want = _draft_size(resize, size_px, w, h)
    s = _draft_scale(w, h, want)
    out_w, out_h = -(-w // s), -(-h // s)
    try:
        arr = sj.decode_jpeg(data, "RGB", min_width=out_w, min_height=out_h)
    except ValueError:  # libjpeg warnings are errors in strict mode: let Pillow judge the file
        return None
    if arr.shape != (out_h, out_w, 3):
        return None
    out = Image.fromarray(arr, "RGB")
    orientation = img.getexif().get(0x0112, 1)
    if orientation in _TRANSPOSE:
        out = out.transpose(getattr(Image.Transpose, _TRANSPOSE[orientation]))
    return out


def _pillow_open(img, size_px: int, resize: str):
    """Decode with Pillow (draft mode for JPEG), apply EXIF orientation, convert to RGB."""
    from PIL import ImageOps

    w, h = img.size
    if img.format == "JPEG":
        want = _draft_size(resize, size_px, w, h)
        img.draft("RGB" if img.mode == "RGB" else None, (want, want))
    if img.getexif().get(0x0112, 1) != 1:  # EXIF orientation; transposing copies
        img = ImageOps.exif_transpose(img)
    return _to_rgb(img)


def decode_image(
    data: bytes, size_px: int, resize: str = DEFAULT_RESIZE, decoder: str = "pillow"
) -> np.ndarray:
    """Decode image bytes to a (size_px, size_px, 3) uint8 RGB array.

    EXIF orientation is applied; grayscale, palette, CMYK, 16-bit and alpha images become RGB
    (alpha composited over white); animated images give their first frame. `resize` is
    `squash` (whole image, aspect ignored), `crop` (shorter side to size_px, centre crop) or
    `pad` (longer side to size_px, black borders). `decoder` `simplejpeg` decodes RGB JPEGs
    with simplejpeg (identical pixels, see README); other files, and any JPEG simplejpeg
    refuses, go through Pillow.

    Raises
    ------
    ImageDecodeError
        The bytes are empty, not an image, truncated or over Pillow's pixel limit.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise ImageDecodeError("empty file (0 bytes)")
    try:
        img = Image.open(io.BytesIO(data))
        rgb = None
        if decoder == "simplejpeg" and img.format == "JPEG" and img.mode == "RGB":
            rgb = _simplejpeg_open(img, data, size_px, resize)
        if rgb is None:
            rgb = _pillow_open(img, size_px, resize)
        method = Image.Resampling.BILINEAR
        if resize == "squash":
            rgb = rgb.resize((size_px, size_px), method)
        elif resize == "crop":
            rgb = ImageOps.fit(rgb, (size_px, size_px), method)
        elif resize == "pad":
            rgb = ImageOps.pad(rgb, (size_px, size_px), method, color=(0, 0, 0))
        else:
            raise ValueError(f"unknown resize policy {resize!r}")
        arr = np.asarray(rgb, dtype=np.uint8)
    except UnidentifiedImageError as err:
        raise ImageDecodeError("not an image Pillow can read") from err
    except Image.DecompressionBombError as err:
        raise ImageDecodeError(f"too many pixels (decompression bomb guard): {err}") from err
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise ImageDecodeError(f"corrupt or truncated image: {err}") from err
    if arr.shape != (size_px, size_px, 3):
        raise ImageDecodeError(f"decoded to unexpected shape {arr.shape}")
    return arr


def check_resize(resize: str) -> str:
    """Return `resize` if it is a known policy, else raise DatasetError."""
    if resize not in RESIZE_POLICIES:
        raise DatasetError(f"--resize must be one of {', '.join(RESIZE_POLICIES)}, not {resize!r}")
    return resize


@dataclass(frozen=True)
class DecodeOptions(Options):
    """How image files become pixels: the resize policy (squash, crop or pad to the square
    input), the JPEG decoder (auto, pillow or simplejpeg; same pixels) and the decode threads
    (`n_workers`, default one per core)."""

    resize: str = DEFAULT_RESIZE
    decoder: str = "auto"
    n_workers: int | None = None

    def check(self) -> DecodeOptions:
        """Raise InvalidOptionError for an unknown policy or decoder, or fewer than 1 thread."""
        if self.resize not in RESIZE_POLICIES:
            raise InvalidOptionError(
                "resize", f"must be one of {', '.join(RESIZE_POLICIES)}, not {self.resize!r}"
            )
        if self.decoder not in DECODERS:
            raise InvalidOptionError("decoder", f"must be one of {', '.join(DECODERS)}, not {self.decoder!r}")
        if self.n_workers is not None and self.n_workers < 1:
            raise InvalidOptionError("n_workers", f"must be at least 1, not {self.n_workers}")
        return self


@dataclass
class LoadedImage:
    """An item after reading: its content digest and pixels, or the reason it failed.

    `pixels` is None when the digest was already known (nothing to compute) or on error.
    `views` holds the (key, pixels) pairs the loader's `make_views` made from the pixels.
    `read_s` and `decode_s` are the worker's seconds reading and hashing the file, and
    decoding, resizing and making views.
    """

    item: ImageItem
    digest: str | None
    pixels: np.ndarray | None
    error: str | None = None
    views: list[tuple[str, np.ndarray]] = field(default_factory=list)
    read_s: float = 0.0
    decode_s: float = 0.0


#: make_views(item, digest, pixels) -> [(key, pixels), ...]: extra arrays made in the workers.
MakeViews = Callable[[ImageItem, str, np.ndarray], list[tuple[str, np.ndarray]]]


def _load_one(
    item: ImageItem,
    size_px: int,
    resize: str,
    is_known: Callable[[ImageItem, str], bool],
    make_views: MakeViews | None,
    decoder: str = "pillow",
) -> LoadedImage:
    t0 = time.perf_counter()
    try:
        with open(item.path, "rb") as f:
            data = f.read()
    except OSError as err:
        return LoadedImage(item, None, None, f"cannot read file: {err.strerror or err}")
    digest = hashlib.sha256(data).hexdigest()
    t1 = time.perf_counter()
    if is_known(item, digest):
        return LoadedImage(item, digest, None, read_s=t1 - t0)
    try:
        pixels = decode_image(data, size_px, resize, decoder)
    except ImageDecodeError as err:
        return LoadedImage(item, digest, None, str(err), read_s=t1 - t0, decode_s=time.perf_counter() - t1)
    views = make_views(item, digest, pixels) if make_views is not None else []
    return LoadedImage(item, digest, pixels, views=views, read_s=t1 - t0, decode_s=time.perf_counter() - t1)


def load_images(
    items: Iterable[ImageItem],
    *,
    size_px: int,
    resize: str = DEFAULT_RESIZE,
    n_workers: int = 4,
    known_digests: frozenset | set = frozenset(),
    is_known: Callable[[ImageItem, str], bool] | None = None,
    make_views: MakeViews | None = None,
    max_ahead: int = 64,
    decoder: str = "pillow",
) -> Iterator[LoadedImage]:
    """Read, hash and decode `items` in `n_workers` threads, yielding them in order.

    At most `max_ahead` images are in flight, so memory stays bounded whatever the dataset
    size. Images whose digest is in `known_digests` (or, when given, for which
    `is_known(item, digest)` is true) are hashed but not decoded. `make_views(item, digest,
    pixels)`, when given, runs on every decoded image and its result lands in `views`. Both
    callbacks run in the worker threads. `decoder` is `pillow` or `simplejpeg` (see
    `resolve_decoder`).
    """
    items = iter(items)
    if is_known is None:
        is_known = lambda item, digest: digest in known_digests  # noqa: E731
    with ThreadPoolExecutor(max_workers=max(1, n_workers), thread_name_prefix="decode") as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(_load_one, item, size_px, resize, is_known, make_views, decoder))
            if len(pending) >= max_ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
