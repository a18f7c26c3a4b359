"""`featstore extract` as one job: options checked, backbone resolved, the work run under the
feature set's lock.

Only rows whose cache key is new are computed (the image digest; for a view also its index and
augmentation config); rows of files that are gone are dropped; with nothing to compute no
session is opened.
"""

from __future__ import annotations

import os
from dataclasses import replace

from featstore.backbones.options import BackboneOptions
from featstore.backbones.recipes import resolve_recipe
from featstore.data.decode import resolve_decoder
from featstore.data.options import AugmentOptions, DecodeOptions
from featstore.data.scan import scan_dataset
from featstore.data.views import parse_views, views_label
from featstore.errors import InvalidOptionError
from featstore.extraction.options import ExtractOptions, ExtractSettings
from featstore.extraction.pipeline import Extraction
from featstore.extraction.result import ExtractResult
from featstore.inference.devices import CPU_BATCH
from featstore.inference.options import InferenceOptions, PrecisionOptions
from featstore.inference.precision import precision_label
from featstore.inference.runtimes import Target
from featstore.jobs import run_job
from featstore.options import JobOptions
from featstore.reporter import SILENT, Reporter
from featstore.store.featuresets import lock_path
from featstore.store.layout import resolve_store

__all__ = ["ExtractOptions", "ExtractResult", "extract"]


def extract(
    data: str | os.PathLike,
    backbone: BackboneOptions = BackboneOptions(),
    *,
    decode: DecodeOptions = DecodeOptions(),
    inference: InferenceOptions = InferenceOptions(),
    precision: PrecisionOptions = PrecisionOptions(),
    augment: AugmentOptions = AugmentOptions(),
    options: ExtractOptions = ExtractOptions(),
    job: JobOptions = JobOptions(),
    reporter: Reporter = SILENT,
) -> ExtractResult:
    """Extract features of every image of `data` with `backbone` into the store.

    `data` is a folder (class folders, train/val/test folders, or images), a CSV manifest
    `path,label[,split]` or a .txt list of paths. The feature set is `<dataset>@<backbone
    label>` (`-int8`, `-fp16`, `-bf16` at those precisions). `reporter` gets `progress(done,
    total)` per image (bytes while weights download) and a line per note.

    Returns
    -------
    ExtractResult
        Images and views; computed, reused, resumed, removed rows; skipped files; seconds,
        rows per second; the check of a new model variant.

    Raises
    ------
    InvalidOptionError
        A bad option value (nothing is read or written).
    DatasetError, StoreError, ExportError, DeviceError, WeightsError
        Bad input or store state, a device or precision not usable here, weights that cannot
        be fetched; nothing stored is lost.
    MissingDependencyError
        A runtime asked for (or needed by the precision) is not installed.
    """
    settings = ExtractSettings(
        backbone.check(), decode.check(), inference.check(), precision.check(), augment.check(),
        options.check(), job,
    )  # fmt: skip
    if options.views and augment.config() is not None:
        raise InvalidOptionError(
            "views", "test-time views and augmented training views go in separate extract runs"
        )
    resolve_decoder(decode.decoder)  # a decoder that is not installed fails first
    engine = _engine(settings)
    # with the ray engine the devices are the cluster's, checked when its actors start
    target = Target(inference.device, inference.runtime, precision.precision, inference.n_threads)
    if engine is None:
        target.check()
    layout = resolve_store(job.store)
    dataset = scan_dataset(data, options.name)
    recipe = resolve_recipe(backbone, layout=layout, reporter=reporter)
    settings = replace(settings, decode=settings.decode.for_backbone(recipe.resize))
    views = parse_views(options.views)
    label = views_label(precision_label(recipe.label, precision.precision), views)
    path = layout.feature_set(f"{dataset.name}@{label}")
    lock = {"lock": lock_path(path), "lock_what": path.stem, "wait": options.wait}
    with run_job("extract", job, lazy=True, reporter=reporter, **lock) as running:
        run = Extraction(running.layout, dataset, recipe, settings, target, engine=engine, reporter=reporter)
        run.on_compute = running.begin
        result = run.run(path, running.run_id)
        running.record = result.to_record(str(dataset.root), inference.engine, recipe.to_dict())
    result.seconds, result.emissions = running.seconds, running.emissions
    return result


def _engine(settings: ExtractSettings):
    """None for the local engine; for "ray", the object `Extraction` reads and computes through."""
    o = settings.inference
    if o.engine == "local":
        return None
    if settings.augment.config() is not None:
        raise InvalidOptionError("engine", "ray makes no augmented views; use the local engine to store them")
    if settings.options.views:
        raise InvalidOptionError("engine", "ray makes no test-time views; use the local engine for --views")
    from featstore.inference.ray_engine import ExtractEngine

    return ExtractEngine(o.ray_address, settings.decode.n_workers, o.device, o.batch_or(CPU_BATCH), o.runtime)
