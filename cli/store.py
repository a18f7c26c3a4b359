"""`featstore store ls|show|rm|verify|compact`: what the store holds, whether it is sound, and
its shards merged."""

from __future__ import annotations

from typing import Annotated

import typer

from featstore_cli.guard import guarded
from featstore_cli.options import Csv, Json, Nl, Store
from featstore_cli.output import dumps, emit, pick_format, table

app = typer.Typer(help="Inspect and maintain the feature store.", no_args_is_help=True)
LS_COLUMNS = [
    "name",
    "n_rows",
    "n_features",
    "n_classes",
    "dtype",
    "size_mb",
    "n_shards",
    "updated",
    "status",
]
#: The feature set attributes `store show` prints, in order (precision: fp32 when not recorded).
SHOW_ATTRS = tuple(
    "dataset layout data_root backbone backbone_digest precision onnx_sha256 input_size resize augment "
    "dtype featstore_version created updated".split()
)


@app.command("ls")
@guarded
def ls(store: Store = None, json_: Json = False, nl: Nl = False, csv_: Csv = False) -> None:
    """List the feature sets in the store.

    Example: featstore store ls --json
    """
    from featstore.store.maintenance import list_feature_sets

    fmt = pick_format(json_, nl, csv_)
    rows = [i.to_dict() for i in list_feature_sets(store)]
    emit(rows, fmt, LS_COLUMNS if fmt == "table" else None)


@app.command("show")
@guarded
def show(
    name: Annotated[str, typer.Argument(help="Feature set name, dataset@backbone.")],
    store: Store = None,
    json_: Json = False,
) -> None:
    """Show one feature set: attributes, rows per class and per split.

    Example: featstore store show digits@mobilenet_v2-96px
    """
    from featstore.store.maintenance import describe_feature_set

    info = describe_feature_set(store, name)
    if json_:
        typer.echo(dumps(info))
        return
    _print_info(info)


def _print_info(info: dict) -> None:
    """Print what `describe_feature_set` returned: counts, attributes, recipe, per class and split."""
    a = info["attrs"]
    typer.echo(f"{info['name']}  ({info['path']})")
    for key in ("n_rows", "n_augmented", "n_features"):
        typer.echo(f"  {key}: {info[key]}")
    for key in SHOW_ATTRS:
        typer.echo(f"  {key}: {a.get(key, 'fp32' if key == 'precision' else None)}")
    recipe = a.get("recipe") or {}
    typer.echo(
        f"  weights: {recipe.get('weights')}  layer: {recipe.get('layer') or '(last)'}  "
        f"pooling: {recipe.get('pooling')}"
    )
    typer.echo(table([{"class": k, "images": v} for k, v in info["per_class"].items()]))
    typer.echo(table([{"split": k, "images": v} for k, v in info["per_split"].items()]))


@app.command("rm")
@guarded
def rm(
    name: Annotated[str, typer.Argument(help="Feature set name, dataset@backbone.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    store: Store = None,
) -> None:
    """Delete a feature set (and the parts of an unfinished run).

    Example: featstore store rm digits@mobilenet_v2-96px --yes
    """
    from featstore.store.maintenance import remove_feature_set

    if not yes and not typer.confirm(f"Delete feature set {name}?"):
        raise typer.Exit(1)
    for path in remove_feature_set(store, name):
        typer.echo(f"removed {path}")


@app.command("verify")
@guarded
def verify(store: Store = None, json_: Json = False) -> None:
    """Read every store file and check checksums, shapes and values; exit 1 if any is damaged.

    Example: featstore store verify
    """
    from featstore.store.maintenance import verify_store

    checks = verify_store(store)
    bad = [c for c in checks if not c.ok]
    if json_:
        typer.echo(dumps([c.to_dict() for c in checks]))
    else:
        for c in checks:
            status = "ok" if c.ok else "DAMAGED"
            typer.echo(f"{status:8} {c.kind:12} {c.path}")
            for p in c.problems:
                typer.echo(f"         - {p}")
            for n in c.notes:
                typer.echo(f"         note: {n}")
        typer.echo(f"{len(checks)} files checked, {len(bad)} damaged")
    if bad:
        raise typer.Exit(1)


@app.command("compact")
@guarded
def compact(
    names: Annotated[list[str] | None, typer.Argument(help="Feature sets to compact (default: all).")] = None,
    store: Store = None,
    json_: Json = False,
) -> None:
    """Merge small shards into full ones and drop the rows of deleted files for good.

    Sets written by earlier versions (one .h5 file) become sharded sets. Readers never see a
    half-merged set: the new version is committed, then the old shards are deleted.

    Example: featstore store compact digits@mobilenet_v2-96px
    """
    from featstore.store.maintenance import compact_feature_sets

    done = [r.to_dict() for r in compact_feature_sets(store, names or None)]
    if json_:
        typer.echo(dumps(done))
        return
    for r in done:
        what = "nothing to do" if r["version"] is None else f"version {r['version']}"
        typer.echo(
            f"{r['name']}: {r['shards_before']} -> {r['shards_after']} shards, {r['rows_dropped']} rows dropped, "
            f"{r['mb_before']} -> {r['mb_after']} MB ({what})"
        )
