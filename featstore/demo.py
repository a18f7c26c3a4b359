"""`featstore demo`: the main job on an embedded dataset that needs nothing from the user.

Turns scikit-learn's handwritten digits (1797 real 8x8 scans, 10 classes, shipped inside
scikit-learn) into an image folder under the store, extracts MobileNetV2 features, and says
which weights it used and why.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from featstore.backbones import get_backbone, imagenet_weights_path
from featstore.extraction import ExtractResult, extract
from featstore.layout import resolve_store

DEMO_BACKBONE = "mobilenet_v2"
DEMO_INPUT_PX = 96
DIGIT_PX = 32


@dataclass
class DemoResult:
    """What the demo did: where the images are, which weights, and the extract result."""

    data: str
    n_images: int
    weights: str
    weights_reason: str
    extract: ExtractResult
    feature_set: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Return a JSON-ready dict."""
        return {
            "data": self.data,
            "n_images": self.n_images,
            "weights": self.weights,
            "weights_reason": self.weights_reason,
            "extract": self.extract.to_dict(),
            "feature_set": self.feature_set,
        }


def write_digits(folder: Path, size_px: int = DIGIT_PX) -> int:
    """Write scikit-learn's digits as PNG files, one folder per digit; return the image count.

    Images are 8x8 scans with 17 grey levels, scaled to 0-255 and enlarged to `size_px`.
    An existing complete folder is kept as it is.
    """
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    n = len(digits.images)
    if folder.is_dir() and sum(1 for _ in folder.rglob("*.png")) == n:
        return n
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        for i, (img, label) in enumerate(zip(digits.images, digits.target, strict=True)):
            pixels = np.clip(np.rint(img * (255.0 / 16.0)), 0, 255).astype(np.uint8)
            out = tmp / str(label)
            out.mkdir(exist_ok=True)
            Image.fromarray(pixels, "L").resize((size_px, size_px), Image.Resampling.BICUBIC).save(
                out / f"digit-{i:04d}.png"
            )
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return n


def choose_weights(weights: str) -> tuple[str, str]:
    """Resolve `auto` to imagenet or none for the demo backbone, with the reason in words."""
    path = imagenet_weights_path(get_backbone(DEMO_BACKBONE))
    if weights == "auto":
        if path.is_file():
            return "imagenet", f"ImageNet weights found at {path}"
        return "none", (
            f"ImageNet weights for {DEMO_BACKBONE} are not cached at {path} and cannot be downloaded "
            "offline, so the demo runs with --weights none (random init); place that file there "
            "to use ImageNet features"
        )
    if weights == "imagenet":
        return "imagenet", f"ImageNet weights asked for ({path})"
    return weights, f"--weights {weights} asked for"


def run_demo(
    store: str | None = None,
    weights: str = "auto",
    emissions: bool = True,
    country: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> DemoResult:
    """Write the digits image folder into the store and extract MobileNetV2 features of it."""
    from featstore.maintenance import describe_feature_set

    layout = resolve_store(store)
    folder = layout.datasets / "digits"
    n = write_digits(folder)
    chosen, reason = choose_weights(weights)
    if log:
        log(f"weights: {chosen} - {reason}")
    result = extract(
        str(folder),
        DEMO_BACKBONE,
        store=str(layout.root),
        weights=chosen,
        input_size=DEMO_INPUT_PX,
        emissions=emissions,
        country=country,
        progress=progress,
        log=log,
    )
    info = describe_feature_set(layout, result.feature_set)
    return DemoResult(str(folder), n, chosen, reason, result, info)
