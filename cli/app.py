"""The `featstore` command: a thin Typer application over the featstore library."""

from __future__ import annotations

import typer

from featstore_cli import backbones as _backbones
from featstore_cli import demo as _demo
from featstore_cli import deploy as _deploy
from featstore_cli import extract as _extract
from featstore_cli import finetune as _finetune
from featstore_cli import heads as _heads
from featstore_cli import inspect as _inspect
from featstore_cli import report as _report
from featstore_cli import score as _score
from featstore_cli import search as _search
from featstore_cli import store as _store
from featstore_cli import weights as _weights

app = typer.Typer(
    name="featstore",
    help="Feature store and classical-classifier toolkit for image transfer learning.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.command("demo")(_demo.demo)
app.add_typer(_backbones.app, name="backbones")
app.add_typer(_weights.app, name="weights")
app.command("extract")(_extract.extract)
app.add_typer(_store.app, name="store")
app.command("fit-head")(_heads.fit_head)
app.command("evaluate")(_heads.evaluate)
app.add_typer(_heads.app, name="heads")
app.add_typer(_inspect.app, name="inspect")
app.command("search")(_search.search)
app.command("score")(_score.score)
app.command("export")(_deploy.export)
app.command("finetune")(_finetune.finetune)
app.command("report")(_report.report)


def _print_version(value: bool) -> None:
    if value:
        from featstore import __version__

        typer.echo(f"featstore {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", help="Print the version and exit.", is_eager=True, callback=_print_version
    ),
) -> None:
    """Feature store and classical-classifier toolkit for image transfer learning.

    Example: featstore demo
    """


def main() -> None:
    """Console-script entry point."""
    app()
