"""Test-time views: fixed transforms of a decoded image (its mirror, five crops) whose features
are averaged into one row per image, stored as a feature set of its own. Pure Python at import
(the CLI reads `VIEWS` at start-up)."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from featstore.errors import InvalidOptionError

if TYPE_CHECKING:
    import numpy as np

#: The views `extract --views` can add to each image: `flip` its mirror image, `crops5` five
#: crops of 87.5 % of its side (the four corners and the centre) resized back to the input size.
VIEWS = ("flip", "crops5")
#: The side of each of `crops5`'s crops, as a share of the image's.
CROP_SHARE = 0.875


def parse_views(text: str | None) -> tuple[str, ...]:
    """`"flip,crops5"` -> ("flip", "crops5") in `VIEWS` order; () for None or empty;
    InvalidOptionError naming an unknown view."""
    names = [n.strip().lower() for n in (text or "").split(",") if n.strip()]
    unknown = [n for n in names if n not in VIEWS]
    if unknown:
        raise InvalidOptionError("views", f"unknown view {unknown[0]!r}; choose from {', '.join(VIEWS)}")
    return tuple(v for v in VIEWS if v in names)


def n_views(views: tuple[str, ...]) -> int:
    """How many arrays `view_stack` makes per image: the image itself and each view's."""
    return 1 + ("flip" in views) + 5 * ("crops5" in views)


def views_label(label: str, views: tuple[str, ...]) -> str:
    """The backbone label of a views feature set: `mobilenet_v2-views-flip-crops5`."""
    return f"{label}-views-{'-'.join(views)}" if views else label


def views_digest(digest: str, views: tuple[str, ...]) -> str:
    """The digest a views feature set records for its features: the backbone's, changed by the
    views, so its rows are never taken for plain features of that backbone (scoring's cache, a
    head's check)."""
    if not views:
        return digest
    return hashlib.sha256(f"{digest}:views:{','.join(views)}".encode()).hexdigest()


def view_stack(pixels: np.ndarray, views: tuple[str, ...]) -> np.ndarray:
    """The image `pixels` (H, W, 3) uint8 and its views, stacked: (n_views(views), H, W, 3)."""
    import numpy as np

    out = [pixels]
    if "flip" in views:
        out.append(pixels[:, ::-1])
    if "crops5" in views:
        from PIL import Image

        h, w = pixels.shape[:2]
        ch, cw = max(1, round(h * CROP_SHARE)), max(1, round(w * CROP_SHARE))
        image = Image.fromarray(pixels)
        for top, left in ((0, 0), (0, w - cw), (h - ch, 0), (h - ch, w - cw), ((h - ch) // 2, (w - cw) // 2)):
            crop = image.crop((left, top, left + cw, top + ch)).resize((w, h), Image.BILINEAR)
            out.append(np.asarray(crop))
    return np.stack([np.ascontiguousarray(p) for p in out])
