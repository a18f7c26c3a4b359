"""`featstore backbones [add|rm]`: the Keras applications and the networks added to the store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from featstore.backbones.options import ADD_POOLINGS, CHANNELS, LAYOUTS, PRESETS, AddOptions
from featstore.data.options import size_text
from featstore_cli.guard import guarded
from featstore_cli.options import Csv, Json, Nl, Store
from featstore_cli.output import dumps, emit, pick_format

COLUMNS = "name source input_size n_features params_m gflops preprocess weights_mb imagenet".split()

app = typer.Typer(invoke_without_command=True)


@app.callback()
@guarded
def backbones(
    ctx: typer.Context, store: Store = None, json_: Json = False, nl: Nl = False, csv_: Csv = False
) -> None:
    """List every backbone: the Keras applications (input size, feature dimension, parameters in
    millions, GFLOPs per image, the size of the ImageNet weight file in MB and its state in
    Keras' cache, see `featstore weights`) and the networks added to the store (their source,
    preprocessing and the same figures, counted from the graph).

    Example: featstore backbones --json
    """
    if ctx.invoked_subcommand is not None:
        return
    from featstore.backbones.adding import added_backbones
    from featstore.backbones.catalog import list_backbones

    fmt = pick_format(json_, nl, csv_)
    rows = [{"source": "keras-app", **b.to_dict()} for b in list_backbones()]
    for card in added_backbones(store):
        row = {"source": f"added-{card.kind}", **card.to_dict(), "preprocess": card.spec.describe()}
        rows.append({**row, "input_size": size_text(card.size)} if fmt == "table" else row)
    if fmt == "table":
        for r in rows:
            r["params_m"] = None if r["n_params"] is None else round(r["n_params"] / 1e6, 2)
        emit(rows, fmt, COLUMNS)
    else:
        emit(rows, fmt)


def _floats(value: str | None, flag: str) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        return tuple(float(v) for v in value.split(","))
    except ValueError:
        raise typer.BadParameter(f"{value!r}: give 3 numbers, R,G,B", param_hint=flag) from None


def _choice(names) -> str:
    return ", ".join(names)


@app.command("add")
@guarded
def add(
    name: Annotated[str, typer.Argument(help="The name --backbone will take.")],
    from_: Annotated[
        Path,
        typer.Option("--from", help="The network: .onnx (NCHW or NHWC), .keras or .h5.", show_default=False),
    ],
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="Its Hugging Face preprocessor_config.json or timm config.json.",
            show_default=False,
        ),
    ] = None,
    preprocess: Annotated[
        str | None,
        typer.Option(
            "--preprocess",
            help=f"A preset: {_choice(PRESETS)} (Keras' preprocess_input modes).",
            show_default=False,
        ),
    ] = None,
    mean: Annotated[str | None, typer.Option("--mean", help="R,G,B means.", show_default=False)] = None,
    std: Annotated[str | None, typer.Option("--std", help="R,G,B deviations.", show_default=False)] = None,
    scale: Annotated[
        float | None,
        typer.Option("--scale", help="Pixels (0-255) are multiplied by it first.", show_default=False),
    ] = None,
    channels: Annotated[
        str | None, typer.Option("--channels", help=f"{_choice(CHANNELS)}.", show_default=False)
    ] = None,
    layout: Annotated[
        str | None,
        typer.Option("--layout", help=f"{_choice(LAYOUTS)} [default: from its input].", show_default=False),
    ] = None,
    input_size: Annotated[
        int | None, typer.Option("--input-size", min=1, help="Square input in px.", show_default=False)
    ] = None,
    resize: Annotated[
        str | None, typer.Option("--resize", help="squash, crop or pad.", show_default=False)
    ] = None,
    crop_pct: Annotated[
        float | None, typer.Option("--crop-pct", help="crop: the centre fraction kept.", show_default=False)
    ] = None,
    interpolation: Annotated[
        str | None, typer.Option("--interpolation", help="bilinear or bicubic.", show_default=False)
    ] = None,
    output: Annotated[
        str | None,
        typer.Option("--output", help="The output to read, when it has several.", show_default=False),
    ] = None,
    pooling: Annotated[
        str,
        typer.Option(
            "--pooling", help=f"{_choice(ADD_POOLINGS[:3])} for maps; {_choice(ADD_POOLINGS[3:])} for tokens."
        ),
    ] = AddOptions.pooling,
    trust: Annotated[
        bool, typer.Option("--trust", help="Load a Keras file that runs code from the file.")
    ] = False,
    replace: Annotated[bool, typer.Option("--replace", help="Replace a backbone of that name.")] = False,
    store: Store = None,
    json_: Json = False,
) -> None:
    """Add your own network as a backbone: its preprocessing folded into its graph, its output
    pooled, checked against the network run by hand on a few images (cosine at least 0.999),
    kept in the store. `--backbone NAME` then works in every command.

    Example: featstore backbones add dinov2-s --from model.onnx --config preprocessor_config.json --output last_hidden_state --pooling cls
    """
    from featstore.backbones.adding import add_backbone
    from featstore_cli.progress import reporting

    options = AddOptions(
        preprocess=preprocess, config=None if config is None else str(config), mean=_floats(mean, "--mean"),
        std=_floats(std, "--std"), scale=scale, channels=channels, layout=layout, input_size=input_size,
        resize=resize, crop_pct=crop_pct, interpolation=interpolation, output=output, pooling=pooling,
        trust=trust, replace=replace,
    )  # fmt: skip
    with reporting("add", quiet=json_, bar=False) as reporter:
        card = add_backbone(name, from_, options, store=store, reporter=reporter)
    if json_:
        typer.echo(dumps(card.to_dict()))
        return
    gflops = "" if card.gflops is None else f", {card.gflops} GFLOPs"
    typer.echo(
        f"{card.name}: {card.kind} network, {size_text(card.size)} px {card.layout}, output {card.output} "
        f"pooled by {card.pooling} -> {card.n_features} features, {card.n_params / 1e6:.2f} M parameters{gflops}"
    )
    typer.echo(f"  preprocessing: {card.spec.describe()} ({card.spec.origin})")
    typer.echo(f"  least cosine to the network run by hand: {card.cosine:.6f}")


@app.command("rm")
@guarded
def rm(
    name: Annotated[str, typer.Argument(help="An added backbone.")], store: Store = None, json_: Json = False
) -> None:
    """Remove an added backbone from the store (feature sets and heads made with it stay).

    Example: featstore backbones rm dinov2-s
    """
    from featstore.backbones.adding import remove_backbone

    card = remove_backbone(name, store)
    typer.echo(dumps(card.to_dict()) if json_ else f"removed {card.name}")
