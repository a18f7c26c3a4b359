"""`featstore finetune`: end-to-end training in TensorFlow, and the from-scratch baselines."""

from __future__ import annotations

from dataclasses import fields
from typing import Annotated

import typer

from featstore.data.options import DecodeOptions, SplitOptions
from featstore.finetune.options import FinetuneOptions, NetworkOptions, TrainingOptions
from featstore.options import JobOptions
from featstore_cli.guard import guarded
from featstore_cli.options import (
    BatchSize,
    Country,
    Emissions,
    InputSize,
    Json,
    Quiet,
    SplitChoice,
    Store,
    Workers,
)
from featstore_cli.output import dumps, emissions_lines, table
from featstore_cli.progress import reporting

Backbone = Annotated[
    str | None,
    typer.Option(
        "--backbone",
        "-b",
        help="Registry name (ImageNet weights: fine-tuning; --weights none: from scratch), a .keras "
        "file, simple-cnn or lenet (small networks from scratch), or finetune:RUN_ID (an earlier run).",
        show_default=False,
    ),
]
Data = Annotated[
    str | None,
    typer.Option(
        "--data",
        "-d",
        help="Folder of class folders (or train/val/test folders), or a CSV manifest path,label[,split].",
        show_default=False,
    ),
]
Name = Annotated[
    str | None, typer.Option("--name", help="Run id to use instead of a generated one.", show_default=False)
]
FinetuneWeights = Annotated[
    str | None,
    typer.Option(
        "--weights",
        help="imagenet, none (from scratch) or PATH [default: imagenet for registry backbones].",
        show_default=False,
    ),
]
Resize = Annotated[
    str | None,
    typer.Option("--resize", help="As for extract [default: the backbone's; squash].", show_default=False),
]
Epochs = Annotated[int, typer.Option("--epochs", help="Epochs in all, warm-up included.")]
WarmupEpochs = Annotated[
    int, typer.Option("--warmup-epochs", help="First epochs that train the head only (backbone frozen).")
]
Unfreeze = Annotated[
    str | None,
    typer.Option(
        "--unfreeze",
        help="Backbone layers trained after the warm-up: a number of top layers, a fraction such as "
        "0.3, or all [default: 30, or all when the network has fewer].",
        show_default=False,
    ),
]
Lr = Annotated[float, typer.Option("--lr", help="Learning rate (Adam) of the warm-up, or from scratch.")]
FineLr = Annotated[float, typer.Option("--fine-lr", help="Learning rate after the warm-up.")]
Augment = Annotated[
    str | None,
    typer.Option(
        "--augment",
        help="Random augmentation in training only: a comma list of flip, rotate, zoom, contrast, translate.",
        show_default=False,
    ),
]
Dropout = Annotated[float, typer.Option("--dropout", help="Dropout before the softmax layer.")]
HeadUnits = Annotated[
    int | None,
    typer.Option(
        "--head-units",
        min=0,
        help="Units of a hidden Dense layer in the head, 0 for none [default: 128 for simple-cnn, else 0].",
        show_default=False,
    ),
]
LabelSmoothing = Annotated[float, typer.Option("--label-smoothing", help="Label smoothing of the loss.")]
ClassWeights = Annotated[
    bool, typer.Option("--class-weights/--no-class-weights", help="Weight classes by inverse frequency.")
]
Patience = Annotated[
    int, typer.Option("--patience", help="Stop after this many epochs without a lower validation loss.")
]
Depth = Annotated[int, typer.Option("--depth", help="simple-cnn: conv blocks (16, 32, 64, ... filters).")]
TestSize = Annotated[float, typer.Option("--test-size", help="Test fraction of a stratified or hash split.")]
ValSize = Annotated[
    float,
    typer.Option(
        "--val-size",
        help="Validation fraction (of all images; of train when carved from a stored train part).",
    ),
]
Seed = Annotated[int, typer.Option("--seed", help="Seed of the split, the weights and the training.")]
TfDevice = Annotated[
    str,
    typer.Option(
        "--device",
        help="auto, cpu or cuda (mixed precision on a GPU); a GPU asked for and not usable is an error.",
    ),
]
Resume = Annotated[
    str | None,
    typer.Option(
        "--resume", help="Continue unfinished run RUN_ID from its last checkpoint.", show_default=False
    ),
]


def _pick(cls, flags: dict):
    """An options object of class `cls` from the command's flags of the same names."""
    return cls(**{f.name: flags[f.name] for f in fields(cls) if f.name in flags})


@guarded
def finetune(
    backbone: Backbone = None,
    data: Data = None,
    name: Name = None,
    weights: FinetuneWeights = NetworkOptions.weights,
    input_size: InputSize = NetworkOptions.input_size,
    resize: Resize = DecodeOptions.resize,
    epochs: Epochs = TrainingOptions.epochs,
    warmup_epochs: WarmupEpochs = TrainingOptions.warmup_epochs,
    unfreeze: Unfreeze = TrainingOptions.unfreeze,
    lr: Lr = TrainingOptions.lr,
    fine_lr: FineLr = TrainingOptions.fine_lr,
    augment: Augment = None,
    dropout: Dropout = NetworkOptions.dropout,
    head_units: HeadUnits = NetworkOptions.head_units,
    label_smoothing: LabelSmoothing = TrainingOptions.label_smoothing,
    class_weights: ClassWeights = TrainingOptions.class_weights,
    patience: Patience = TrainingOptions.patience,
    depth: Depth = NetworkOptions.depth,
    test_size: TestSize = SplitOptions.test_size,
    val_size: ValSize = SplitOptions.val_size,
    seed: Seed = SplitOptions.seed,
    split: SplitChoice = SplitOptions.split,
    batch_size: BatchSize = TrainingOptions.batch_size,
    device: TfDevice = FinetuneOptions.device,
    workers: Workers = DecodeOptions.n_workers,
    resume: Resume = None,
    emissions: Emissions = JobOptions.emissions,
    country: Country = JobOptions.country,
    store: Store = JobOptions.store,
    json_: Json = False,
    quiet: Quiet = False,
) -> None:
    """Train a network end to end (fine-tuning, or from scratch) and save it as store/finetune/RUN_ID/.

    Exports classifier.onnx (pixels to class probabilities) and backbone.onnx (pixels to features,
    for `featstore extract --backbone finetune:RUN_ID`), both checked against Keras.

    Example: featstore finetune --backbone simple-cnn --data photos/ --input-size 64 --epochs 5
    """
    flags = locals()  # the flags, named as the options' fields (first: before any other local)
    from featstore.finetune.run import finetune as run_finetune

    options = FinetuneOptions(
        network=_pick(NetworkOptions, flags),
        training=_pick(TrainingOptions, {**flags, "augment": augment or TrainingOptions.augment}),
        split=_pick(SplitOptions, flags),
        decode=DecodeOptions(resize=resize, n_workers=workers),
        device=device,
    )
    job = _pick(JobOptions, flags)
    with reporting("finetune", quiet) as reporter:
        result = run_finetune(
            data, backbone, options=options, job=job, name=name, resume=resume, reporter=reporter
        )
    typer.echo(dumps(result.to_dict()) if json_ else render_finetune(result))


def render_finetune(r) -> str:
    """Human summary of a FinetuneResult."""
    rows = [
        {
            "split": p,
            "images": m["n"],
            "accuracy": m["accuracy"],
            "macro_f1": m["macro_f1"],
            "log_loss": m["log_loss"],
        }
        for p, m in r.metrics.items()
    ]
    stop = ", stopped early" if r.stopped_early else ""
    resumed = f", resumed after epoch {r.resumed_from_epoch}" if r.resumed_from_epoch is not None else ""
    lines = [
        f"{r.run_id}: {r.method} {r.backbone} on {r.dataset} ({r.n_images} images, {len(r.class_names)} classes, "
        f"{r.input_size} px), {r.epochs_run} epochs{stop}{resumed}; best epoch {r.best_epoch}",
        table(rows),
        f"  {r.params_total:,} parameters ({r.params_trainable:,} trained), {r.gflops_per_image:.3g} GFLOPs/image, "
        f"{r.n_features} features",
        f"  {r.seconds:.1f} s, training {r.train_images_per_s} images/s on {r.device}; "
        f"ONNX classifier {r.images_per_s} images/s",
    ]
    lines += emissions_lines(r.emissions)
    if r.skipped:
        lines.append("skipped:")
        lines += [f"  {s.path}: {s.reason}" for s in r.skipped]
    lines.append(f"saved {r.path} (model card: card.md); extract with --backbone finetune:{r.run_id}")
    return "\n".join(lines)
