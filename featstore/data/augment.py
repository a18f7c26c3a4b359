"""Augmented views of decoded images: the transforms, their seeding and the views' cache keys.

View v of an image is seeded by its content digest, v and `augment_seed`, so it is the same in
every run; geometric transforms resample the mirror-padded image (no black corners).
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

from featstore.data.options import AugmentConfig
from featstore.errors import DatasetError, StoreError

MAX_ROTATE_DEG = 20.0
ZOOM_RANGE = (0.8, 1.2)
CONTRAST_RANGE = (0.8, 1.2)
MAX_TRANSLATE_FRAC = 0.1


def view_seed(digest: str, view: int, seed: int) -> int:
    """The random seed of view `view` of the image with content digest `digest` (a 64-bit int)."""
    raw = hashlib.sha256(f"{digest}:{view}:{seed}".encode()).digest()
    return int.from_bytes(raw[:8], "little")


def view_key(digest: str, view: int, config: AugmentConfig | None) -> str:
    """The cache key of a row: the image digest for view 0, else SHA-256 of digest, view and config."""
    if view == 0:
        return digest
    if config is None:
        raise StoreError(f"a row of view {view} has no augmentation config to key it by")
    return hashlib.sha256(f"{digest}:{view}:{config.key_json()}".encode()).hexdigest()


def row_keys(digests: list[str], views: np.ndarray, config: AugmentConfig | None) -> list[str]:
    """Cache keys of rows given their image digests and view indices (n,) int."""
    return [view_key(d, int(v), config) for d, v in zip(digests, views, strict=True)]


def augment(pixels: np.ndarray, config: AugmentConfig, seed: int) -> np.ndarray:
    """Return one augmented view of `pixels`, (H, W, 3) uint8 -> (H, W, 3) uint8, its random
    parameters drawn from a generator seeded with `seed`: flip (p 1/2), rotate (+-20 degrees),
    zoom (0.8-1.2), translate (+-10 %), contrast (0.8-1.2 about each channel's mean)."""
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise DatasetError(f"augment expects (H, W, 3) uint8 pixels, got {pixels.shape} {pixels.dtype}")
    rng = np.random.default_rng(seed)
    ops = set(config.ops)
    h, w = pixels.shape[:2]
    flip = "flip" in ops and bool(rng.random() < 0.5)
    angle = float(rng.uniform(-MAX_ROTATE_DEG, MAX_ROTATE_DEG)) if "rotate" in ops else 0.0
    scale = float(rng.uniform(*ZOOM_RANGE)) if "zoom" in ops else 1.0
    if "translate" in ops:
        dx, dy = rng.uniform(-MAX_TRANSLATE_FRAC, MAX_TRANSLATE_FRAC, 2) * (w, h)
    else:
        dx = dy = 0.0
    out = pixels
    if flip or angle or scale != 1.0 or dx or dy:
        out = _warp(pixels, flip, angle, scale, float(dx), float(dy))
    if "contrast" in ops:
        out = _contrast(out, float(rng.uniform(*CONTRAST_RANGE)))
    return out


def _warp(pixels: np.ndarray, flip: bool, angle_deg: float, scale: float, dx: float, dy: float) -> np.ndarray:
    """Flip, rotate, zoom and shift about the centre as one bilinear affine resampling of the
    mirror-padded image."""
    from PIL import Image

    h, w = pixels.shape[:2]
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    t = math.radians(angle_deg)
    c, s = math.cos(t), math.sin(t)
    # source (u, v) of output pixel (x, y), pixel-centre coordinates: undo shift, zoom, rotation, flip
    a, b, d, e = c / scale, -s / scale, s / scale, c / scale
    k = a * (-cx - dx) + b * (-cy - dy) + cx
    m = d * (-cx - dx) + e * (-cy - dy) + cy
    if flip:
        a, b, k = -a, -b, (w - 1) - k
    corners = [(x, y) for x in (0, w - 1) for y in (0, h - 1)]
    us = [a * x + b * y + k for x, y in corners]
    vs = [d * x + e * y + m for x, y in corners]
    over = max(0.0, -min(us), max(us) - (w - 1), -min(vs), max(vs) - (h - 1))
    pad = math.ceil(over) + 2
    padded = np.pad(pixels, ((pad, pad), (pad, pad), (0, 0)), mode="symmetric")
    k, m = k + pad, m + pad
    # Pillow maps output (x + 0.5, y + 0.5) to input corner coordinates: shift by half a pixel
    data = (a, b, k + 0.5 - 0.5 * (a + b), d, e, m + 0.5 - 0.5 * (d + e))
    img = Image.fromarray(padded).transform((w, h), Image.Transform.AFFINE, data, Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def _contrast(pixels: np.ndarray, factor: float) -> np.ndarray:
    """Scale each channel's deviation from its mean by `factor` (as Keras' RandomContrast)."""
    f = pixels.astype(np.float32)
    mean = f.mean(axis=(0, 1), keepdims=True)
    return np.clip(np.rint((f - mean) * factor + mean), 0, 255).astype(np.uint8)
