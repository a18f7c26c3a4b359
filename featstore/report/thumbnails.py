"""Thumbnails of a head's misclassified test images, read only when the file still holds the
recorded bytes; the others are counted and named in a note."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

from featstore.files import sha256_file

#: The file a head keeps its misclassified test images in (see `heads.saved`).
MISCLASSIFIED_FILE = "misclassified.json"
#: Thumbnails shown per head, and their longer side in pixels.
PER_HEAD = 12
SIZE_PX = 96


@dataclass
class Thumbnail:
    """One misclassified image: JPEG bytes and what the head got wrong."""

    jpeg: bytes
    path: str
    true: str
    predicted: str
    probability: float | None

    @property
    def caption(self) -> str:
        """`true -> predicted (p)`, e.g. `rose -> tulip (0.91)`."""
        p = "" if self.probability is None else f" ({self.probability:.2f})"
        return f"{self.true} \u2192 {self.predicted}{p}"


def thumbnail_jpeg(path: Path, size_px: int = SIZE_PX) -> bytes:
    """The image at `path` shrunk to at most `size_px`, as JPEG bytes (Pillow's errors otherwise)."""
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("RGB")
        img.thumbnail((size_px, size_px))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def misclassified_thumbnails(folder: Path, limit: int = PER_HEAD) -> tuple[list[Thumbnail], str | None]:
    """The first `limit` showable misclassified test images of the head in `folder`, and a note
    when some could not be shown (None when all were)."""
    path = Path(folder) / MISCLASSIFIED_FILE
    if not path.is_file():
        return [], f"head {Path(folder).name}: no {MISCLASSIFIED_FILE} (fitted by an older featstore)"
    try:
        items = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        return [], f"head {Path(folder).name}: {MISCLASSIFIED_FILE} cannot be read ({err})"
    shown, missing = [], 0
    for item in items:
        if len(shown) >= limit:
            break
        image = Path(item.get("root") or "") / str(item.get("path"))
        try:
            if not image.is_file() or sha256_file(image) != item.get("digest"):
                missing += 1
                continue
            jpeg = thumbnail_jpeg(image)
        except (OSError, ValueError):
            missing += 1
            continue
        shown.append(
            Thumbnail(
                jpeg, str(item.get("path")), item.get("true"), item.get("predicted"), item.get("probability")
            )
        )
    note = None
    if missing:
        note = (
            f"head {Path(folder).name}: {missing} misclassified test image(s) no longer at their paths "
            "(moved, changed or unreadable); not shown"
        )
    return shown, note
