"""`featstore finetune`: end-to-end training in TensorFlow, and the from-scratch baselines."""

from __future__ import annotations

from typing import Annotated

import typer

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
from featstore_cli.output import dumps, emissions_lines, note, table
from featstore_cli.progress import progress_bar


@guarded
def finetune(
    backbone: Annotated[
        str | None,
        typer.Option(
            "--backbone",
            "-b",
            help="Registry name (ImageNet weights: fine-tuning; --weights none: from scratch), a .keras "
            "file, simple-cnn or lenet (small networks from scratch), or finetune:RUN_ID (an earlier run).",
            show_default=False,
        ),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            "-d",
            help="Folder of class folders (or train/val/test folders), or a CSV manifest path,label[,split].",
            show_default=False,
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option("--name", help="Run id to use instead of a generated one.", show_default=False),
    ] = None,
    weights: Annotated[
        str | None,
        typer.Option(
            "--weights",
            help="imagenet, none (from scratch) or PATH [default: imagenet for registry backbones].",
            show_default=False,
        ),
    ] = None,
    input_size: InputSize = None,
    resize: Annotated[
        str,
        typer.Option("--resize", help="squash, crop or pad, as for extract."),
    ] = "squash",
    epochs: Annotated[int, typer.Option("--epochs", help="Epochs in all, warm-up included.")] = 10,
    warmup_epochs: Annotated[
        int,
        typer.Option("--warmup-epochs", help="First epochs that train the head only (backbone frozen)."),
    ] = 2,
    unfreeze: Annotated[
        str | None,
        typer.Option(
            "--unfreeze",
            help="Backbone layers trained after the warm-up: a number of top layers, a fraction such as "
            "0.3, or all [default: 30, or all when the network has fewer].",
            show_default=False,
        ),
    ] = None,
    lr: Annotated[
        float, typer.Option("--lr", help="Learning rate (Adam) of the warm-up, or from scratch.")
    ] = 1e-3,
    fine_lr: Annotated[float, typer.Option("--fine-lr", help="Learning rate after the warm-up.")] = 1e-4,
    augment: Annotated[
        str | None,
        typer.Option(
            "--augment",
            help="Random augmentation in training only: a comma list of flip, rotate, zoom, contrast, translate.",
            show_default=False,
        ),
    ] = None,
    dropout: Annotated[float, typer.Option("--dropout", help="Dropout before the softmax layer.")] = 0.2,
    head_units: Annotated[
        int | None,
        typer.Option(
            "--head-units",
            min=0,
            help="Units of a hidden Dense layer in the head, 0 for none [default: 128 for simple-cnn, else 0].",
            show_default=False,
        ),
    ] = None,
    label_smoothing: Annotated[
        float, typer.Option("--label-smoothing", help="Label smoothing of the loss.")
    ] = 0.0,
    class_weights: Annotated[
        bool,
        typer.Option("--class-weights/--no-class-weights", help="Weight classes by inverse frequency."),
    ] = False,
    patience: Annotated[
        int, typer.Option("--patience", help="Stop after this many epochs without a lower validation loss.")
    ] = 5,
    depth: Annotated[
        int, typer.Option("--depth", help="simple-cnn: conv blocks (16, 32, 64, ... filters).")
    ] = 3,
    test_size: Annotated[
        float, typer.Option("--test-size", help="Test fraction of a stratified or hash split.")
    ] = 0.2,
    val_size: Annotated[
        float,
        typer.Option(
            "--val-size",
            help="Validation fraction (of all images; of train when carved from a stored train part).",
        ),
    ] = 0.1,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the split, the weights and the training.")] = 0,
    split: SplitChoice = "auto",
    batch_size: BatchSize = 32,
    device: Annotated[
        str,
        typer.Option(
            "--device",
            help="auto, cpu or cuda (mixed precision on a GPU); a GPU asked for and not usable is an error.",
        ),
    ] = "auto",
    workers: Workers = None,
    resume: Annotated[
        str | None,
        typer.Option(
            "--resume", help="Continue unfinished run RUN_ID from its last checkpoint.", show_default=False
        ),
    ] = None,
    emissions: Emissions = True,
    country: Country = None,
    store: Store = None,
    json_: Json = False,
    quiet: Quiet = False,
) -> None:
    """Train a network end to end (fine-tuning, or from scratch) and save it as store/finetune/RUN_ID/.

    Exports classifier.onnx (pixels to class probabilities) and backbone.onnx (pixels to features,
    for `featstore extract --backbone finetune:RUN_ID`), both checked against Keras.

    Example: featstore finetune --backbone simple-cnn --data photos/ --input-size 64 --epochs 5
    """
    from featstore.finetune.run import finetune as run_finetune

    with progress_bar("finetune", quiet) as progress:
        result = run_finetune(
            data,
            backbone,
            store=store,
            name=name,
            weights=weights,
            input_size=input_size,
            resize=resize,
            epochs=epochs,
            warmup_epochs=warmup_epochs,
            unfreeze=unfreeze,
            lr=lr,
            fine_lr=fine_lr,
            batch_size=batch_size,
            augment=augment,
            dropout=dropout,
            head_units=head_units,
            label_smoothing=label_smoothing,
            class_weights=class_weights,
            patience=patience,
            depth=depth,
            test_size=test_size,
            val_size=val_size,
            seed=seed,
            split=split,
            device=device,
            n_workers=workers,
            resume=resume,
            emissions=emissions,
            country=country,
            progress=progress,
            log=lambda msg: note(msg, quiet),
        )
    if json_:
        typer.echo(dumps(result.to_dict()))
        return
    typer.echo(render_finetune(result))


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
