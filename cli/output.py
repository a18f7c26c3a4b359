"""Rendering of results: one `emit(rows, fmt)` for table, JSON, JSON lines and CSV."""

from __future__ import annotations

import csv
import json
import sys

import typer

from featstore.files import json_default


def pick_format(json_: bool = False, nl: bool = False, csv_: bool = False) -> str:
    """Return "json", "nl", "csv" or "table" from the mutually exclusive flags (exit 2 on two)."""
    chosen = [name for name, on in (("json", json_), ("nl", nl), ("csv", csv_)) if on]
    if len(chosen) > 1:
        raise typer.BadParameter(f"choose one output format, not {' and '.join('--' + c for c in chosen)}")
    return chosen[0] if chosen else "table"


def dumps(obj) -> str:
    """JSON text of `obj` (paths as strings, numpy scalars as numbers)."""
    return json.dumps(obj, default=json_default, ensure_ascii=False, indent=None)


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10000 else str(value)
    return str(value)


def table(rows: list[dict], columns: list[str] | None = None) -> str:
    """Aligned plain-text table of `rows` (numbers right-aligned)."""
    if not rows:
        return "(none)"
    columns = columns or list(rows[0])
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    numeric = [all(isinstance(r.get(c), (int, float)) or r.get(c) is None for r in rows) for c in columns]

    def fmt(values):
        return "  ".join(
            v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    lines = [fmt(columns), fmt(["-" * w for w in widths])]
    lines += [fmt(row) for row in cells]
    return "\n".join(lines)


def emit(rows: list[dict] | dict, fmt: str, columns: list[str] | None = None) -> None:
    """Print `rows` to stdout as a table, one JSON document, JSON lines or CSV."""
    if fmt == "json":
        typer.echo(dumps(rows))
        return
    items = rows if isinstance(rows, list) else [rows]
    if fmt == "nl":
        for row in items:
            typer.echo(dumps(row))
    elif fmt == "csv":
        columns = columns or (list(items[0]) if items else [])
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        for row in items:
            writer.writerow(["" if row.get(c) is None else _plain_csv(row.get(c)) for c in columns])
    else:
        typer.echo(table(items, columns))


def _plain_csv(value):
    return dumps(value) if isinstance(value, (dict, list)) else value


def emissions_lines(e) -> list[str]:
    """The summary line of an Emissions result: energy and CO2, or why there are none."""
    if e.energy_kwh is not None:
        est = " (estimate)" if e.estimated else ""
        return [f"  energy {e.energy_kwh:.3g} kWh, CO2 {e.co2_kg:.3g} kg ({e.country}){est}"]
    return [f"  {e.note}"] if e.note else []
