"""Image files to pixels: `decode_image` (EXIF orientation, every colour mode, the resize policy)
and `load_images`, the bounded thread pool that reads, hashes and decodes ahead, in input order."""

from __future__ import annotations

import hashlib
import io
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from featstore.data.options import DECODERS, DEFAULT_RESIZE, Size, hw, parse_resize
from featstore.data.scan import ImageItem
from featstore.errors import MissingDependencyError
from featstore.options import check_choice


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


_TRANSPOSE = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE"}
_TRANSPOSE.update({6: "ROTATE_270", 7: "TRANSVERSE", 8: "ROTATE_90"})


def _simplejpeg():
    try:
        import simplejpeg
    except ImportError:
        return None
    return simplejpeg


def _check_decoder(decoder: str) -> str:
    return check_choice("decoder", decoder, DECODERS)


def resolve_decoder(decoder: str = "auto") -> str:
    """Return the JPEG decoder to use (`auto`: simplejpeg when installed, else pillow);
    InvalidOptionError for an unknown name, MissingDependencyError for simplejpeg missing."""
    _check_decoder(decoder)
    have = _simplejpeg() is not None
    if decoder == "simplejpeg" and not have:
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


def _draft_size(resize: str | None, size_px: Size, w: int, h: int) -> int:
    """The side draft mode is asked for: the input's longer side, for `pad` the scaled shorter
    side, for a crop fraction the side before the crop."""
    spec = parse_resize(resize or DEFAULT_RESIZE)
    side = max(hw(size_px))
    if spec.policy == "pad":
        return math.ceil(side * min(w, h) / max(w, h))
    return spec.scaled_side(side) if spec.policy == "crop" else side


def _simplejpeg_open(img, data: bytes, size_px: Size, resize: str | None):
    """Decode an RGB JPEG with simplejpeg at Pillow's draft scale (the same libjpeg-turbo, IDCT and
    upsampling, so identical pixels); None when it cannot."""
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


def _pillow_open(img, size_px: Size, resize: str | None):
    """Decode with Pillow (draft mode for JPEG), apply EXIF orientation, convert to RGB."""
    from PIL import ImageOps

    w, h = img.size
    if img.format == "JPEG":
        want = _draft_size(resize, size_px, w, h)
        img.draft("RGB" if img.mode == "RGB" else None, (want, want))
    if img.getexif().get(0x0112, 1) != 1:  # EXIF orientation; transposing copies
        img = ImageOps.exif_transpose(img)
    return _to_rgb(img)


def _fit(rgb, size_px: Size, resize: str | None):
    """Resize a Pillow RGB image to `size_px` (a side, or (height, width)) by `resize` (see `Resize`)."""
    from PIL import Image, ImageOps

    spec = parse_resize(resize or DEFAULT_RESIZE)
    method = Image.Resampling.BICUBIC if spec.interpolation == "bicubic" else Image.Resampling.BILINEAR
    th, tw = hw(size_px)
    if spec.policy == "squash":
        return rgb.resize((tw, th), method)
    if spec.policy == "crop" and spec.crop_pct == 1.0:
        return ImageOps.fit(rgb, (tw, th), method)
    if spec.policy == "crop":  # timm / Hugging Face: to size / crop_pct, then the centre
        w, h = rgb.size
        if th == tw:  # the shorter side to the scaled side, as torchvision's Resize(int)
            side = spec.scaled_side(th)
            rw, rh = (side, int(side * h / w)) if w <= h else (int(side * w / h), side)
        else:  # both sides scaled, as timm does for a (height, width) input
            rw, rh = spec.scaled_side(tw), spec.scaled_side(th)
        out = rgb.resize((rw, rh), method)
        left, top = int(round((rw - tw) / 2.0)), int(round((rh - th) / 2.0))
        return out.crop((left, top, left + tw, top + th))
    return ImageOps.pad(rgb, (tw, th), method, color=(0, 0, 0))


def decode_image(
    data: bytes, size_px: Size, resize: str | None = DEFAULT_RESIZE, decoder: str = "pillow"
) -> np.ndarray:
    """Decode image bytes to a (height, width, 3) uint8 RGB array, `size_px` a side (square) or
    (height, width).

    EXIF orientation is applied; every colour mode becomes RGB (alpha over white); animations
    give their first frame. `resize`: `squash` (aspect ignored), `crop` (centre, optionally with a
    crop fraction: `crop:0.875:bicubic`) or `pad` (black borders); see `Resize`. `decoder` `simplejpeg` takes the RGB JPEGs it can (identical pixels).
    ImageDecodeError for empty, non-image, truncated or oversized bytes.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ImageDecodeError("empty file (0 bytes)")
    try:
        img = Image.open(io.BytesIO(data))
        rgb = None
        if decoder == "simplejpeg" and img.format == "JPEG" and img.mode == "RGB":
            rgb = _simplejpeg_open(img, data, size_px, resize)
        if rgb is None:
            rgb = _pillow_open(img, size_px, resize)
        arr = np.asarray(_fit(rgb, size_px, resize), dtype=np.uint8)
    except UnidentifiedImageError as err:
        raise ImageDecodeError("not an image Pillow can read") from err
    except Image.DecompressionBombError as err:
        raise ImageDecodeError(f"too many pixels (decompression bomb guard): {err}") from err
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise ImageDecodeError(f"corrupt or truncated image: {err}") from err
    if arr.shape != (*hw(size_px), 3):
        raise ImageDecodeError(f"decoded to unexpected shape {arr.shape}")
    return arr


@dataclass
class LoadedImage:
    """An item after reading: its content digest and pixels (None when the digest was known, or on
    error), the `views` `make_views` made, and the worker's `read_s` and `decode_s`."""

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
    size_px: Size,
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


class _Ready:
    """A result known without reading the file, queued in order with the workers' futures."""

    def __init__(self, value: LoadedImage):
        self.value = value

    def result(self) -> LoadedImage:
        return self.value


def load_images(
    items: Iterable[ImageItem],
    *,
    size_px: Size,
    resize: str = DEFAULT_RESIZE,
    n_workers: int = 4,
    known_digests: frozenset | set = frozenset(),
    is_known: Callable[[ImageItem, str], bool] | None = None,
    make_views: MakeViews | None = None,
    max_ahead: int = 64,
    decoder: str = "pillow",
    cached: Mapping[str, str] | None = None,
) -> Iterator[LoadedImage]:
    """Read, hash and decode `items` in `n_workers` threads, yielding them in order, at most
    `max_ahead` in flight. Images whose digest is in `known_digests` (or `is_known(item,
    digest)`) are hashed, not decoded; an image whose digest `cached` gives (by `item.rel`) and
    is known is not even read; `make_views(item, digest, pixels)` runs on each decoded image in
    the worker threads."""
    items = iter(items)
    cached = cached or {}
    if is_known is None:
        is_known = lambda item, digest: digest in known_digests  # noqa: E731
    with ThreadPoolExecutor(max_workers=max(1, n_workers), thread_name_prefix="decode") as pool:
        pending: deque = deque()
        for item in items:
            digest = cached.get(item.rel)
            if digest is not None and is_known(item, digest):
                pending.append(_Ready(LoadedImage(item, digest, None)))
            else:
                pending.append(pool.submit(_load_one, item, size_px, resize, is_known, make_views, decoder))
            if len(pending) >= max_ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
