"""`featstore extract`: images -> backbone -> feature set, with the content-digest cache.

Owns `extract`, the one library call the command makes: it checks the options, resolves the
backbone, and runs the work (`extraction.pipeline`) inside the job wrapper (`jobs.run_job`:
the feature set's lock, lazily measured energy, the `ExtractRecord` in the run log). A re-run
computes only rows whose cache key is new (the image digest for a plain row; digest, view and
augmentation config for a view), drops rows of files that are gone, and resumes the parts a
killed run left behind. Imports `jobs`, `runtime`, `data.scan`, `data.decode`, `data.augment`,
`store`, `backbones.registry`, `inference` (precision, sessions; the Ray engine only with
engine ray) and the other `extraction` modules.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from featstore.backbones.registry import BackboneOptions, resolve_recipe
from featstore.data.augment import AugmentOptions
from featstore.data.decode import DecodeOptions, resolve_decoder
from featstore.data.scan import scan_dataset
from featstore.errors import InvalidOptionError
from featstore.extraction.options import ExtractOptions, ExtractSettings, extract_settings
from featstore.extraction.pipeline import Extraction, Progress
from featstore.extraction.result import ExtractResult
from featstore.inference.precision import PrecisionOptions, check_precision, precision_label
from featstore.inference.sessions import device_for, resolve_runtime
from featstore.jobs import JobOptions, run_job
from featstore.runtime import CPU_BATCH, RuntimeOptions
from featstore.store.featuresets import lock_path
from featstore.store.layout import resolve_store

__all__ = ["ExtractOptions", "ExtractResult", "extract"]


def extract(
    data: str | os.PathLike,
    backbone: BackboneOptions | str = BackboneOptions.backbone,
    *,
    decode: DecodeOptions | None = None,
    runtime: RuntimeOptions | str | None = None,
    precision: PrecisionOptions | str | None = None,
    augment: AugmentOptions | str | None = None,
    options: ExtractOptions | None = None,
    job: JobOptions | None = None,
    progress: Progress | None = None,
    log: Callable[[str], None] | None = None,
    **keywords,
) -> ExtractResult:
    """Extract features of every image of `data` with `backbone` into the store.

    Each options argument left None takes its class's defaults.

    Parameters
    ----------
    data
        A folder of class folders, of train/val/test folders, or of images; or a CSV
        manifest `path,label[,split]`; or a .txt list of paths.
    backbone
        `BackboneOptions`, or a name: a registry name (`featstore backbones`), a .onnx /
        .keras file, or `finetune:<run-id>` (the backbone of a finished fine-tune run; feature
        set `<dataset>@finetune-<run-id>`).
    decode
        Resize policy, JPEG decoder (auto, pillow or simplejpeg: same pixels) and decode threads.
    runtime
        Device, images per batch (or auto: 32 on the CPU, probed on a GPU), inference threads,
        the engine: "local" (decode threads and one session here) or "ray" (images read,
        decoded and run in the actors of a Ray cluster, the one at `ray_address` or a new
        local one, `decode.n_workers` actors, default one per GPU or CPU; the store is written
        here exactly as by the local engine), and the runtime: "auto" (OpenVINO on a CPU with
        native bfloat16 where it is installed, else ONNX Runtime), "onnxruntime" or
        "openvino". A string is the runtime's name. fp32 features of either runtime share one
        feature set (they differ by float round-off); int8 features under OpenVINO are a
        model of their own. With auto, an existing set goes on with the runtime it was made by.
    precision
        fp32; int8 (static quantization calibrated on `n_calibration` images of `data`, or
        the store's int8 model of that backbone unless `recalibrate`; checked against fp32 on
        `n_check` held-out images); fp16 (GPU only); or bf16 (OpenVINO on a CPU with AMX or
        AVX-512 BF16; checked against fp32 on `n_check` images). The set is named
        `...-int8`/`-fp16`/`-bf16`.
    augment
        Transforms and `copies`: that many augmented views of each training image (split
        "train", or every image when the dataset has no split) are stored beside its plain
        row, as rows with `view` 1..copies, made from the decoded (size, size, 3) uint8 pixels
        and seeded by image digest, view and `augment_seed`.
    options
        The dataset's name, the stored dtype (float32 or float16), `force`, `wait`.
    job
        Store, energy and CO2 measurement, country.
    progress, log
        `progress(n_done, n_total)` after every image read (and `progress(bytes, total,
        "download")` while ImageNet weights download); `log(line)` for notes.
    **keywords
        Flat keyword arguments, each replacing the field of that name in the object that
        declares it (`batch_size=64`, `store="s"`, `precision="int8"`, `augment="flip"`);
        see `extraction.options.extract_settings`.

    Returns
    -------
    ExtractResult
        Counts of images and views; computed, reused, resumed, removed rows; skipped files;
        seconds and rows computed per second.

    Raises
    ------
    InvalidOptionError
        A bad option value, or a keyword that is no option (nothing is read or written).
    DatasetError, StoreError, ExportError, DeviceError, WeightsError
        Bad input or store state, a device (or bf16) asked for and not usable here, or
        ImageNet weights that cannot be downloaded (on first use, into Keras' cache); nothing
        stored is lost.
    MissingDependencyError
        OpenVINO asked for (`runtime="openvino"`, or bf16) and not installed.
    """
    settings = extract_settings(
        backbone,
        decode=decode,
        runtime=runtime,
        precision=precision,
        augment=augment,
        options=options,
        job=job,
        **keywords,
    )
    return run_extract(data, settings, progress=progress, log=log)


def run_extract(
    data: str | os.PathLike, settings: ExtractSettings, *, progress: Progress | None = None, log=None
) -> ExtractResult:
    """`extract` with its options gathered in `settings` (see `extract_settings`)."""
    resolve_decoder(settings.decode.decoder)  # a decoder that is not installed fails first
    engine = _engine(settings)
    runtime = _check_devices(settings, engine)
    layout = resolve_store(settings.job.store)
    dataset = scan_dataset(data, settings.options.name)
    recipe = resolve_recipe(settings.backbone, layout=layout, progress=progress, log=log)
    path = layout.feature_set(f"{dataset.name}@{precision_label(recipe.label, settings.precision.precision)}")
    with run_job(
        "extract",
        settings.job,
        lock=lock_path(path),
        lock_what=path.stem,
        wait=settings.options.wait,
        lazy=True,
        progress=progress,
        log=log,
    ) as job:
        run = Extraction(
            job.layout,
            dataset,
            recipe,
            settings,
            engine=engine,
            log=job.log,
            on_compute=job.begin,
            runtime=runtime,
        )
        result = run.run(path, progress, job.run_id)
        job.record = result.to_record(str(dataset.root), settings.runtime.engine)
    result.seconds, result.emissions = job.seconds, job.emissions
    return result


def _engine(settings: ExtractSettings):
    """None for the local engine; for "ray", the object `Extraction` reads and computes through."""
    rt = settings.runtime
    if rt.engine == "local":
        return None
    if settings.augment.config() is not None:
        raise InvalidOptionError("engine", "ray makes no augmented views; use the local engine to store them")
    from featstore.inference.ray_engine import ExtractEngine

    return ExtractEngine(
        rt.ray_address, settings.decode.n_workers, rt.device, rt.batch_or(CPU_BATCH), rt.runtime
    )


def _check_devices(settings: ExtractSettings, engine) -> str:
    """Check, before any work, that the device is usable here and can run the precision under
    the runtime asked for; return the resolved runtime (onnxruntime or openvino)."""
    device, runtime = settings.runtime.device, settings.runtime.runtime
    precision = settings.precision.precision
    # with the ray engine the devices are the cluster's, checked when its actors start
    resolved = device_for(device, runtime, precision) if engine is None else device.replace("auto", "cpu")
    return resolve_runtime(runtime, resolved, check_precision(precision, resolved))
