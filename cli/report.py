"""`featstore report`: every recorded run side by side, as Markdown, HTML or records."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from featstore_cli.guard import guarded
from featstore_cli.options import Csv, Json, Nl, Quiet, Store
from featstore_cli.output import emit, pick_format
from featstore_cli.progress import note

FORMATS = ("markdown", "html")


@guarded
def report(
    dataset: Annotated[
        str | None, typer.Option("--dataset", help="Only the runs of this dataset.", show_default=False)
    ] = None,
    format_: Annotated[
        str,
        typer.Option(
            "--format",
            help="markdown (tables) or html (one self-contained page with the pictures; to stdout unless --output).",
        ),
    ] = "markdown",
    output: Annotated[
        str | None,
        typer.Option(
            "--output", "-o", help="Write the report to this file instead of stdout.", show_default=False
        ),
    ] = None,
    store: Store = None,
    json_: Json = False,
    nl: Nl = False,
    csv_: Csv = False,
    quiet: Quiet = False,
) -> None:
    """Compare every recorded run side by side: accuracy, wall time, energy, CO2, parameters, GFLOPs.

    One row per extract, fit-head, finetune and evaluate run in the store's run log, grouped by
    dataset (an evaluate run under the dataset it scored), best test accuracy first, with a line
    under a table when a split was re-mapped (val used as the test set); a head's time, energy
    and CO2 include the extraction of its features. What could not be reported (an unreadable log line, a deleted head) is listed
    on stderr. --json, --nl and --csv print the rows (keys as in the JSON) to stdout.

    Example: featstore report --format html --output report.html
    """
    from featstore.report.build import build_report
    from featstore.report.html import render_html
    from featstore.report.markdown import render_markdown

    fmt = pick_format(json_, nl, csv_)
    if format_ not in FORMATS:
        raise typer.BadParameter(f"--format must be markdown or html, not {format_!r}")
    if fmt != "table" and (format_ != "markdown" or output):
        raise typer.BadParameter("--json, --nl and --csv print rows to stdout; drop --format/--output")
    result = build_report(store=store, dataset=dataset)
    for message in result.skipped:
        note(f"skipped: {message}", quiet)
    if fmt != "table":
        emit([r.to_dict() for r in result.rows], fmt)
        return
    text = render_html(result) if format_ == "html" else render_markdown(result)
    if output is None:
        typer.echo(text, nl=False)
        return
    Path(output).expanduser().parent.mkdir(parents=True, exist_ok=True)
    Path(output).expanduser().write_text(text, encoding="utf-8")
    typer.echo(f"wrote {output}: {len(result.rows)} rows, {len(result.skipped)} skipped")
