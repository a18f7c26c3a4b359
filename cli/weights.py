"""`featstore weights ls|pull|verify|import`: ImageNet weight files in Keras' cache."""

from __future__ import annotations

from typing import Annotated

import typer

from featstore_cli.guard import guarded
from featstore_cli.options import Csv, Json, Nl, Quiet
from featstore_cli.output import dumps, emit, pick_format
from featstore_cli.progress import reporting

app = typer.Typer(
    help="ImageNet weight files: list, download ahead of time, verify, import from elsewhere.",
    no_args_is_help=True,
)
LS_COLUMNS = ["backbone", "state", "size_mb", "check", "path"]
PULL_COLUMNS = ["backbone", "action", "size_mb", "seconds", "mb_per_s", "path"]

TimeoutS = Annotated[
    float | None,
    typer.Option(
        "--timeout-s",
        min=0.1,
        help="Seconds to wait for a connection or more bytes [default: $FEATSTORE_DOWNLOAD_TIMEOUT_S or 30].",
        show_default=False,
    ),
]


def _mb(n: int | None) -> float | None:
    return None if n is None else round(n / 1e6, 1)


@app.command("ls")
@guarded
def ls(
    backbones: Annotated[
        list[str] | None, typer.Argument(help="Backbones to list [default: all].", show_default=False)
    ] = None,
    json_: Json = False,
    nl: Nl = False,
    csv_: Csv = False,
) -> None:
    """List every backbone's ImageNet weight file: official, trusted, not official or missing,
    its size, how it was checked and where it is ($KERAS_HOME/models/).

    Example: featstore weights ls
    """
    from featstore.backbones.weights import list_weights

    fmt = pick_format(json_, nl, csv_)
    rows = [s.to_dict() for s in list_weights(backbones)]
    if fmt == "table":
        for r in rows:
            r["size_mb"] = _mb(r["size"])
    emit(rows, fmt, LS_COLUMNS if fmt == "table" else None)


@app.command("pull")
@guarded
def pull(
    backbones: Annotated[
        list[str] | None, typer.Argument(help="Backbones whose weights to fetch.", show_default=False)
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Fetch the weights of every backbone.")] = False,
    to: Annotated[
        str | None,
        typer.Option(
            "--to",
            help="Put the files in this folder instead of Keras' cache (to carry to a machine without "
            "the internet: import them there, or serve the folder as FEATSTORE_WEIGHTS_URL=file:///...).",
            show_default=False,
        ),
    ] = None,
    timeout_s: TimeoutS = None,
    json_: Json = False,
    quiet: Quiet = False,
) -> None:
    """Download official ImageNet weight files ahead of time, checking their hashes.

    Example: featstore weights pull mobilenet_v2 resnet50
    """
    from featstore.backbones.fetching import pull_weights

    with reporting("weights", quiet) as reporter:
        results = pull_weights(backbones, all_=all_, to=to, timeout_s=timeout_s, reporter=reporter)
    rows = [r.to_dict() for r in results]
    if json_:
        typer.echo(dumps(rows))
        return
    for r in rows:
        r["size_mb"] = _mb(r["bytes"])
    emit(rows, "table", PULL_COLUMNS)


@app.command("verify")
@guarded
def verify(
    backbones: Annotated[
        list[str] | None, typer.Argument(help="Backbones to check [default: all].", show_default=False)
    ] = None,
    json_: Json = False,
) -> None:
    """Read every cached weight file again and check it against the catalog; exit code 1 when
    one is not the official file (and was not trusted) or a trusted file changed.

    Example: featstore weights verify
    """
    from featstore.backbones.weights import FOREIGN, MISSING, list_weights

    rows = [
        s.to_dict() for s in list_weights(backbones, verify=True) if s.state != MISSING or s.partial_bytes
    ]
    bad = [r for r in rows if r["state"] == FOREIGN]
    if json_:
        typer.echo(dumps(rows))
    else:
        for r in rows:
            typer.echo(f"{r['state']:>12}  {r['backbone']}: {r['check']}  ({r['path']})")
        typer.echo(
            f"{len(rows) - len(bad)} of {len(rows)} weight files ok" if rows else "no weight files cached"
        )
    if bad:
        raise typer.Exit(1)


@app.command("import")
@guarded
def import_(
    file: Annotated[str, typer.Argument(help="A weight file obtained elsewhere (.h5).")],
    backbone: Annotated[str, typer.Option("--backbone", "-b", help="The backbone it belongs to.")],
    trust: Annotated[
        bool,
        typer.Option(
            "--trust",
            help="Accept a file that is not the official one (converted, fine-tuned, ...); its sha256 is "
            "recorded and marks every feature made with it.",
        ),
    ] = False,
    json_: Json = False,
) -> None:
    """Place a weight file in Keras' cache as a backbone's ImageNet weights: accepted when its
    hash is the official one, or with --trust.

    Example: featstore weights import mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5 --backbone mobilenet_v2 --trust
    """
    from featstore.backbones.fetching import import_weights

    result = import_weights(file, backbone, trust=trust)
    if result.warning:
        typer.echo(f"warning: {result.warning}", err=True)
    if json_:
        typer.echo(dumps(result.to_dict()))
        return
    typer.echo(
        f"{result.backbone}: {result.state} ({result.check}), sha256 {result.sha256[:12]}, at {result.path}"
    )
