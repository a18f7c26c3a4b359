"""`featstore demo`: the main job end to end on scikit-learn's handwritten digits, needing nothing
from the user (ImageNet weights when the network allows, random weights otherwise, saying so)."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from featstore.backbones.options import BackboneOptions
from featstore.errors import WeightsError
from featstore.extraction.job import ExtractResult, extract
from featstore.options import JobOptions
from featstore.reporter import SILENT, Reporter
from featstore.store.layout import StoreLayout, resolve_store

DEMO_BACKBONE = "mobilenet_v2"
DEMO_INPUT_PX = 96
DIGIT_PX = 32


@dataclass
class DemoResult:
    """What the demo did: images, weights and why, the extract result, each head's summary (best
    validation accuracy first), the report page and the wall seconds."""

    data: str
    n_images: int
    weights: str
    weights_reason: str
    extract: ExtractResult
    feature_set: dict = field(default_factory=dict)
    heads: list[dict] = field(default_factory=list)
    split: dict = field(default_factory=dict)
    report: str | None = None
    seconds: float | None = None

    def to_dict(self) -> dict:
        """Return a JSON-ready dict."""
        return {
            "data": self.data,
            "n_images": self.n_images,
            "weights": self.weights,
            "weights_reason": self.weights_reason,
            "extract": self.extract.to_dict(),
            "feature_set": self.feature_set,
            "heads": self.heads,
            "split": self.split,
            "report": self.report,
            "seconds": self.seconds,
        }


def write_digits(folder: Path, size_px: int = DIGIT_PX) -> int:
    """Write scikit-learn's 8x8 digits as PNG files enlarged to `size_px`, a folder per digit;
    return the image count (a complete folder is kept as it is)."""
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


def choose_weights(weights: str, reporter: Reporter = SILENT) -> tuple[str, str]:
    """Resolve `auto` to imagenet (cached, or downloaded now) or none, with the reason in words."""
    from featstore.backbones.fetching import ensure_weights

    if weights != "auto":
        return weights, f"--weights {weights} asked for"
    try:
        status = ensure_weights(DEMO_BACKBONE, reporter=reporter)
    except WeightsError as err:
        return "none", f"random init (--weights none), because ImageNet weights are not usable: {err}"
    return "imagenet", f"ImageNet weights ({status.state}: {status.check}) at {status.path}"


def run_demo(
    *,
    weights: str = "auto",
    report: str | os.PathLike | None = "report.html",
    job: JobOptions = JobOptions(),
    reporter: Reporter = SILENT,
) -> DemoResult:
    """Run the main job on the digits: image folder, MobileNetV2 features, every head, report.

    `weights` is auto (ImageNet when cached or downloadable, else random, saying why),
    imagenet, none or a file; `report` the HTML page to write (None: none).

    Returns
    -------
    DemoResult
        The extract result, each head's accuracies, macro F1, seconds and energy, the page.

    Raises
    ------
    FeatstoreError
        `weights` imagenet that cannot be fetched, or a store that cannot be written.
    """
    from featstore.store.maintenance import describe_feature_set

    t0 = time.perf_counter()
    layout = resolve_store(job.store)
    job = replace(job, store=str(layout.root))
    folder = layout.datasets / "digits"
    n = write_digits(folder)
    chosen, reason = choose_weights(weights, reporter)
    result = _extract_digits(folder, chosen, job, reporter)
    info = describe_feature_set(layout, result.feature_set)
    fits = _fit_every_head(result.feature_set, job, reporter)
    page = None if report is None else _write_page(layout, Path(report).expanduser())
    return DemoResult(
        data=str(folder),
        n_images=n,
        weights=chosen,
        weights_reason=reason,
        extract=result,
        feature_set=info,
        heads=[f.summary() for f in fits],
        split=fits[0].split,
        report=None if page is None else str(page),
        seconds=round(time.perf_counter() - t0, 1),
    )


def _extract_digits(folder: Path, weights: str, job: JobOptions, reporter: Reporter) -> ExtractResult:
    """Extract MobileNetV2 features (at `DEMO_INPUT_PX`) of the digits folder into the store."""
    backbone = BackboneOptions(backbone=DEMO_BACKBONE, weights=weights, input_size=DEMO_INPUT_PX)
    return extract(str(folder), backbone, job=job, reporter=reporter)


def _fit_every_head(feature_set: str, job: JobOptions, reporter: Reporter) -> list:
    """Fit every head kind on `feature_set` (scored on the validation part: the demo's first
    look stays quick); return their `FitResult`s, best validation first."""
    from featstore.heads.fitting import fit_head
    from featstore.heads.params import SelectOptions
    from featstore.heads.registry import make_params

    reporter.log(f"fitting every head on {feature_set}")
    every = make_params("all", {})
    return fit_head(every, [feature_set], job=job, select=SelectOptions("val"), reporter=reporter)


def _write_page(layout: StoreLayout, page: Path) -> Path:
    """Write the comparison of every digits run as one HTML page at `page`; return it."""
    from featstore.files import write_atomic
    from featstore.report.build import build_report
    from featstore.report.html import render_html

    page.parent.mkdir(parents=True, exist_ok=True)
    html = render_html(build_report(store=layout.root, dataset="digits"), layout.root)
    write_atomic(page, html.encode("utf-8"))
    return page
