"""`featstore extract`: images -> features in the store. The flags' defaults are the fields of the
option objects; the command builds them and calls `featstore.extraction.job.extract`."""

from __future__ import annotations

from typing import Annotated

import typer

from featstore.backbones.options import BackboneOptions
from featstore.data.options import AugmentOptions, DecodeOptions
from featstore.extraction.options import ExtractOptions
from featstore.inference.options import InferenceOptions, PrecisionOptions
from featstore.options import JobOptions
from featstore_cli.guard import guarded
from featstore_cli.options import (
    BatchSizeAuto,
    Country,
    Decoder,
    Device,
    Emissions,
    Engine,
    InputSize,
    Json,
    Precision,
    Quiet,
    RayAddress,
    Runtime,
    Store,
    Threads,
    Weights,
    Workers,
)
from featstore_cli.output import dumps, emissions_lines
from featstore_cli.progress import reporting

_Backbone = Annotated[
    str,
    typer.Option(
        "--backbone", "-b", help="Registry name (see `featstore backbones`) or a .onnx/.keras file."
    ),
]

_Data = Annotated[
    str,
    typer.Option(
        "--data",
        "-d",
        help="Folder of class folders (or train/val/test folders), a CSV manifest path,label[,split], or a .txt list of paths.",
    ),
]

_Name = Annotated[
    str | None,
    typer.Option(
        "--name", help="Dataset name in the store [default: the folder's name].", show_default=False
    ),
]

_Layer = Annotated[
    str | None,
    typer.Option("--layer", help="Take features from this intermediate layer.", show_default=False),
]

_Pooling = Annotated[str, typer.Option("--pooling", help="avg or max over the spatial grid.")]

_Resize = Annotated[
    str | None,
    typer.Option(
        "--resize",
        help="squash (whole image, like Keras load_img), crop (centre) or pad (black borders); "
        "crop:0.875:bicubic adds a crop fraction and the interpolation [default: the backbone's; "
        "squash for the Keras applications].",
        show_default=False,
    ),
]

_Dtype = Annotated[str, typer.Option("--dtype", help="float32 or float16 features on disk.")]

_Augment = Annotated[
    str | None,
    typer.Option(
        "--augment",
        help="Also store augmented views of each training image (every image when the data has no "
        "train split): a comma list of flip, rotate, zoom, contrast, translate. Needs --copies.",
        show_default=False,
    ),
]

_Copies = Annotated[
    int, typer.Option("--copies", help="Augmented views per training image (with --augment).")
]

_AugmentSeed = Annotated[
    int,
    typer.Option("--augment-seed", help="Seed of the augmentations; the same seed gives the same views."),
]

_Views = Annotated[
    str | None,
    typer.Option(
        "--views",
        help="Test-time views: store, per image, the mean of the features of the image and its views "
        "(flip: its mirror; crops5: five 87.5 % crops), as the feature set DATASET@BACKBONE-views-....",
        show_default=False,
    ),
]

_CalibrationImages = Annotated[
    int | None,
    typer.Option(
        "--calibration-images",
        min=1,
        help="With --precision int8: images of --data that calibrate a new int8 model [default: 200].",
        show_default=False,
    ),
]

_CheckImages = Annotated[
    int | None,
    typer.Option(
        "--check-images",
        min=0,
        help="With --precision int8 or bf16: other images on which a new int8 or bf16 model is "
        "compared with fp32 (0: no check) [default: 300].",
        show_default=False,
    ),
]

_Recalibrate = Annotated[
    bool,
    typer.Option(
        "--recalibrate",
        help="With --precision int8: calibrate a new int8 model on --data instead of reusing the "
        "store's (features of the old and new model do not mix).",
    ),
]

_Force = Annotated[bool, typer.Option("--force", help="Recompute every image and replace the feature set.")]

_Wait = Annotated[
    bool,
    typer.Option("--wait", help="Wait for another run writing the same feature set instead of exiting."),
]

_Rehash = Annotated[
    bool,
    typer.Option("--rehash", help="Read and hash every image again instead of trusting the stat cache."),
]

_Profile = Annotated[
    bool,
    typer.Option("--profile", help="Print seconds per stage (decode, transfer, inference, write) after."),
]


@guarded
def extract(
    backbone: _Backbone,
    data: _Data,
    name: _Name = ExtractOptions.name,
    weights: Weights = BackboneOptions.weights,
    input_size: InputSize = BackboneOptions.input_size,
    layer: _Layer = BackboneOptions.layer,
    pooling: _Pooling = BackboneOptions.pooling,
    resize: _Resize = DecodeOptions.resize,
    dtype: _Dtype = ExtractOptions.dtype,
    augment: _Augment = AugmentOptions.augment,
    copies: _Copies = AugmentOptions.copies,
    augment_seed: _AugmentSeed = AugmentOptions.augment_seed,
    views: _Views = ExtractOptions.views,
    precision: Precision = PrecisionOptions.precision,
    calibration_images: _CalibrationImages = PrecisionOptions.n_calibration,
    check_images: _CheckImages = PrecisionOptions.n_check,
    recalibrate: _Recalibrate = PrecisionOptions.recalibrate,
    decoder: Decoder = DecodeOptions.decoder,
    batch_size: BatchSizeAuto = InferenceOptions.batch_size,
    workers: Workers = DecodeOptions.n_workers,
    threads: Threads = InferenceOptions.n_threads,
    device: Device = InferenceOptions.device,
    runtime: Runtime = InferenceOptions.runtime,
    engine: Engine = InferenceOptions.engine,
    ray_address: RayAddress = InferenceOptions.ray_address,
    force: _Force = ExtractOptions.force,
    wait: _Wait = ExtractOptions.wait,
    rehash: _Rehash = ExtractOptions.rehash,
    profile: _Profile = False,
    emissions: Emissions = JobOptions.emissions,
    country: Country = JobOptions.country,
    store: Store = JobOptions.store,
    json_: Json = False,
    quiet: Quiet = False,
) -> None:
    """Extract backbone features of every image into the store (only new images are computed).

    With --augment and --copies N, N augmented views of each training image are stored too.
    With --views flip (or flip,crops5) each row is the mean of the image's and its views' features,
    in a feature set of its own (DATASET@BACKBONE-views-flip), never mixed with plain features.
    With --precision int8 the backbone is quantized once (calibrated on your images, checked
    against fp32, a warning when it loses over 0.5 accuracy points) and the set is named
    DATASET@BACKBONE-int8; --precision bf16 (OpenVINO, CPU with native bf16) is checked the same
    way and named DATASET@BACKBONE-bf16.

    Example: featstore extract --backbone mobilenet_v2 --data photos/ --weights none --input-size 96
    """
    from featstore.extraction.job import extract as run_extract

    with reporting("extract", quiet) as reporter:
        result = run_extract(
            data,
            BackboneOptions(backbone, weights, input_size, layer, pooling),
            decode=DecodeOptions(resize, decoder, workers),
            inference=InferenceOptions(device, batch_size, threads, engine, ray_address, runtime),
            precision=PrecisionOptions(precision, calibration_images, check_images, recalibrate),
            augment=AugmentOptions(augment, copies, augment_seed),
            options=ExtractOptions(name, dtype, force, wait, views, rehash),
            job=JobOptions(store, emissions, country),
            reporter=reporter,
        )
    for warning in result.warnings:
        typer.echo(f"warning: {warning}", err=True)
    if json_:
        d = result.to_dict()
        if not profile:
            d.pop("profile")
        typer.echo(dumps(d))
        return
    typer.echo(render_extract(result))
    if profile:
        typer.echo(render_profile(result))


def render_extract(r) -> str:
    """Human summary of an ExtractResult."""
    views = f", {r.n_views} augmented views" if r.n_views else ""
    lines = [
        f"{r.feature_set}: {r.n_images} images{views}, {r.n_features} features ({r.dtype}), "
        f"{len(r.class_names)} classes",
        f"  computed {r.n_computed}, reused {r.n_reused}, resumed {r.n_resumed}, "
        f"removed {r.n_removed}, skipped {r.n_skipped}"
        + ("" if r.written else "; nothing changed, file untouched"),
    ]
    runtime = f" with {r.runtime}" if r.runtime else ""
    speed = f", {r.images_per_s:.1f} images/s on {r.device}{runtime}" if r.images_per_s else ""
    batch = f", batch {r.batch_size}" if r.batch_size and r.images_per_s else ""
    lines.append(f"  {r.seconds:.1f} s{speed}{batch} -> {r.path}")
    if r.precision in ("int8", "bf16"):
        lines.append("  " + render_check(r.precision_check, r.calibration, r.precision))
    lines += emissions_lines(r.emissions)
    if r.empty_classes:
        lines.append(f"  empty class folders: {', '.join(r.empty_classes)}")
    if r.skipped:
        lines.append("skipped:")
        lines += [f"  {s.path}: {s.reason}" for s in r.skipped]
    return "\n".join(lines)


def render_check(check: dict | None, calibration: dict | None, precision: str = "int8") -> str:
    """One line: what the int8 model was calibrated on (bf16: that OpenVINO runs it), what it
    costs against fp32, and the speeds the check measured per runtime."""
    cal = calibration or {}
    head = (
        f"int8 model calibrated on {cal.get('dataset')} ({cal.get('n_images')} images)"
        if precision == "int8"
        else "bf16 model (OpenVINO)"
    )
    if not check:
        return head + "; not checked against fp32"
    held = "held-out " if check.get("held_out") else ""
    line = f"{head}; vs fp32 on {check['n_images']} {held}images: cosine {check['cosine_mean']:.4f} (min {check['cosine_min']:.4f})"
    if check.get("accuracy_loss_points") is None:
        line = f"{line}; {check.get('note')}"
    else:
        line = (
            f"{line}, logistic accuracy {100 * check['fp32_accuracy']:.1f} % fp32 vs "
            f"{100 * check[f'{precision}_accuracy']:.1f} % {precision} ({0.0 - check['accuracy_loss_points']:+.1f} points)"
        )
    f, q = check.get("fp32_images_per_s"), check.get(f"{precision}_images_per_s")
    line = f"{line}; {q / f:.1f}x the fp32 speed" if f and q else line
    speeds = {k: v for k, v in (check.get("speeds") or {}).items() if v}
    if speeds:
        line += " (images/s: " + ", ".join(f"{k} {v:.1f}" for k, v in speeds.items()) + ")"
    return line


def render_profile(r) -> str:
    """The --profile table: seconds, ms per computed image and share of the loop per stage."""
    from featstore_cli.output import table

    if not r.profile:
        return "profile: nothing was computed"
    p = r.profile
    head = f"profile: {p['n_images']} images computed in {p['wall_s']:.2f} s (+{p['setup_s']:.2f} s setup)"
    b = p.get("bottleneck")
    if b:
        head += f"; bottleneck: {b['stage']}, {b['share_of_wall']:.0%} of the loop ({b['why']})"
    return head + "\n" + table(p["stages"], ["stage", "seconds", "ms_per_image", "share_of_wall", "where"])
