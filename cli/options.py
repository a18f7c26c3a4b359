"""Options shared by several commands, defined once as `Annotated` aliases."""

from __future__ import annotations

from typing import Annotated

import typer

Store = Annotated[
    str | None,
    typer.Option("--store", help="Store root [default: $FEATSTORE_HOME or ./store].", show_default=False),
]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON document instead of a table.")]
Nl = Annotated[bool, typer.Option("--nl", help="Print one JSON object per line.")]
Csv = Annotated[bool, typer.Option("--csv", help="Print CSV with a header row.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar, no notes on stderr.")]
Device = Annotated[
    str,
    typer.Option("--device", help="auto, cpu, cuda or tensorrt; a GPU asked for and not usable is an error."),
]
BatchSize = Annotated[int, typer.Option("--batch-size", min=1, help="Images per inference batch.")]
BatchSizeAuto = Annotated[
    str,
    typer.Option(
        "--batch-size",
        help="Images per inference batch, or auto: 32 on the CPU, the fastest size that fits on a "
        "CUDA GPU (probed), 64 with TensorRT.",
    ),
]
Precision = Annotated[
    str,
    typer.Option(
        "--precision",
        help="fp32; int8 (CPU: static quantization calibrated on your images, accuracy checked "
        "against fp32); fp16 (GPU only); bf16 (CPU with AMX or AVX-512 BF16, OpenVINO; checked "
        "against fp32).",
    ),
]
Runtime = Annotated[
    str,
    typer.Option(
        "--runtime",
        help="What runs the backbone: auto (OpenVINO on a CPU with native bf16 when it is "
        "installed, else ONNX Runtime; ONNX Runtime on a GPU), onnxruntime or openvino "
        '(pip install "featstore[openvino]").',
    ),
]
Decoder = Annotated[
    str,
    typer.Option(
        "--decoder",
        help="JPEG decoder: auto (simplejpeg when installed), pillow or simplejpeg; same pixels.",
    ),
]
Workers = Annotated[
    int | None,
    typer.Option("--workers", min=1, help="Decode threads [default: one per core].", show_default=False),
]
Threads = Annotated[
    int | None,
    typer.Option("--threads", min=1, help="Inference threads [default: one per core].", show_default=False),
]
Weights = Annotated[
    str, typer.Option("--weights", help="imagenet, none (random init) or PATH to a weights file.")
]
InputSize = Annotated[
    int | None,
    typer.Option(
        "--input-size",
        min=1,
        help="Square input size in px [default: the backbone's own].",
        show_default=False,
    ),
]
Country = Annotated[
    str | None,
    typer.Option(
        "--country",
        help="ISO 3166 alpha-3 code for the CO2 estimate [default: $FEATSTORE_COUNTRY or USA].",
        show_default=False,
    ),
]
Emissions = Annotated[
    bool, typer.Option("--emissions/--no-emissions", help="Measure energy and CO2 with codecarbon (offline).")
]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace the output file if it exists.")]
Engine = Annotated[
    str,
    typer.Option(
        "--engine",
        help="local (threads and one ONNX Runtime session here) or ray (actors of a Ray cluster; "
        "with ray, --workers sets the number of actors [default: one per GPU, else per CPU]).",
    ),
]
RayAddress = Annotated[
    str | None,
    typer.Option(
        "--ray-address",
        help="Join this Ray cluster (auto, or ray://host:10001) [default: start a local one].",
        show_default=False,
    ),
]
SplitChoice = Annotated[
    str,
    typer.Option(
        "--split",
        help="stored (train/val/test folders or a manifest's split column; with train and val only, "
        "val is the test set and validation is carved from train), stratified (--test-size, "
        "--val-size, --seed), or hash (each image's part from its content digest: adding images "
        "never moves one) [default: stored when there is one, else stratified].",
        show_default=False,
    ),
]
