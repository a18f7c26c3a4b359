"""The comparison report as one self-contained HTML page: inline CSS and script, pictures as
`data:` URIs, no network resource of any kind."""

from __future__ import annotations

import base64
import json
import re
import time
from html import escape
from pathlib import Path

from featstore.report.inspections import inspected_datasets, render_inspections
from featstore.report.markdown import (
    COLUMNS,
    EVALUATE_NOTE,
    TOTALS_NOTE,
    cells,
    fewshot_heading,
    fewshot_pivot,
    split_notes,
    sweep_cells,
    sweep_columns,
    sweep_heading,
)
from featstore.report.model import (
    METHOD_EVALUATE,
    METHOD_EXTRACT,
    METHOD_HEAD,
    Report,
    ReportRow,
    by_dataset,
)
from featstore.store.layout import StoreLayout, resolve_store

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px; color: #222; }
.wide { overflow-x: auto; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 7px; }
th { background: #eef2f7; cursor: pointer; user-select: none; white-space: nowrap; }
th[data-dir=asc]::after { content: " \\25B2"; } th[data-dir=desc]::after { content: " \\25BC"; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.pictures { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
figure { margin: 0; } figcaption { font-size: 12px; color: #555; max-width: 640px; }
img.plot { max-width: 600px; } img.cm { max-width: 420px; }
figure.cm { max-width: 420px; } img.curve { max-width: 800px; }
pre { background: #f6f6f6; padding: 8px; overflow-x: auto; font-size: 12px; }
.note { color: #555; }
.thumbs { display: flex; flex-wrap: wrap; gap: 6px; margin: 4px 0 14px; }
.thumbs figure { width: 104px; } .thumbs img { max-width: 96px; max-height: 96px; display: block; }
.thumbs figcaption { font-size: 11px; max-width: 104px; overflow-wrap: anywhere; }
"""
_SCRIPT = """
document.querySelectorAll("table.sortable th").forEach(function (th) {
  th.addEventListener("click", function () {
    var table = th.closest("table"), body = table.tBodies[0], col = th.cellIndex;
    var asc = th.getAttribute("data-dir") !== "asc";
    table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("data-dir"); });
    th.setAttribute("data-dir", asc ? "asc" : "desc");
    var key = function (row) {
      var v = row.cells[col].getAttribute("data-v");
      return v === null ? row.cells[col].textContent : (v === "" ? null : parseFloat(v));
    };
    Array.from(body.rows).sort(function (a, b) {
      var x = key(a), y = key(b);
      if (x === null || y === null) { return (x === null) - (y === null); }
      var c = typeof x === "number" ? x - y : String(x).localeCompare(String(y));
      return asc ? c : -c;
    }).forEach(function (row) { body.appendChild(row); });
  });
});
"""
#: Marker colour of each method in the scatter plots, the same in every plot.
METHOD_COLOURS = {
    METHOD_HEAD: "tab:orange",
    "fine-tune": "tab:blue",
    "scratch": "tab:green",
    "sweep": "tab:purple",
}
_NUMERIC = {name for name, _, _ in COLUMNS} - {"method", "backbone", "head", "id"}


def _img(png: bytes, alt: str, cls: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img class="{cls}" alt="{escape(alt)}" src="data:image/png;base64,{data}">'


def _anchor(row: ReportRow) -> str:
    return "card-" + re.sub(r"[^A-Za-z0-9_-]", "_", row.head_id or row.run_id)


def _card_path(row: ReportRow) -> Path | None:
    path = Path(row.folder) / "card.md" if row.folder else None
    return path if path is not None and path.is_file() else None


def _table(rows: list[ReportRow]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for _, h, _ in COLUMNS)
    body = []
    for row in rows:
        tds = []
        for (name, _, _), text in zip(COLUMNS, cells(row), strict=True):
            if name in _NUMERIC:
                value = getattr(row, name)
                tds.append(f'<td class="num" data-v="{"" if value is None else value}">{escape(text)}</td>')
            elif name == "id" and _card_path(row):
                tds.append(f'<td><a href="#{_anchor(row)}">{escape(text)}</a></td>')
            else:
                tds.append(f"<td>{escape(text)}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    return f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _label(row: ReportRow, with_backbone: bool) -> str:
    name = row.head if row.method == METHOD_HEAD else row.method
    return f"{name} {row.backbone}" if with_backbone and row.backbone else str(name)


def _scatters(dataset: str, rows: list[ReportRow], notes: list[str]) -> str:
    from featstore.plots import scatter_png

    scored = [
        r for r in rows if r.method not in (METHOD_EXTRACT, METHOD_EVALUATE) and r.test_accuracy is not None
    ]
    several = len({r.backbone for r in scored}) > 1
    out = []
    for field, x_label, what in (
        ("total_seconds", "wall time, s (with extraction)", "time"),
        ("total_co2_kg", "CO2, kg (with extraction)", "CO2"),
    ):
        points = [
            (getattr(r, field), r.test_accuracy, _label(r, several), r.method)
            for r in scored
            if getattr(r, field) is not None
        ]
        if not points:
            notes.append(f"{dataset}: no head or fine-tune run with a test accuracy and {what}; no plot")
            continue
        title = f"{dataset}: test accuracy against {what}"
        png = scatter_png(points, x_label, title, METHOD_COLOURS)
        out.append(f"<figure>{_img(png, title, 'plot')}</figure>")
    return f'<div class="pictures">{"".join(out)}</div>' if out else ""


def _confusions(rows: list[ReportRow], notes: list[str]) -> str:
    out = []
    for row in rows:
        if row.method != METHOD_HEAD:
            continue
        path = Path(row.folder or "") / "confusion_test.png"
        png = path.read_bytes() if path.is_file() else b""
        if not png.startswith(b"\x89PNG"):
            notes.append(f"head {row.head_id}: {path.name} missing or not a PNG; no confusion matrix")
            continue
        caption = f"{row.head_id}: test split (rows true, columns predicted)"
        img = _img(png, caption, "cm")
        out.append(f'<figure class="cm">{img}<figcaption>{escape(caption)}</figcaption></figure>')
    if not out:
        return ""
    return f'<h3>Confusion matrices</h3><div class="pictures">{"".join(out)}</div>'


def _reliability(dataset: str, rows: list[ReportRow]) -> str:
    """One reliability diagram of the dataset's heads (their test reliability bins), with each
    head's expected calibration error in the legend."""
    from featstore.plots import reliability_png

    curves = {}
    for row in rows:
        if row.method != METHOD_HEAD or row.test_ece is None:
            continue
        try:
            meta = json.loads((Path(row.folder or "") / "meta.json").read_text())
        except (OSError, ValueError):
            continue
        bins = ((meta.get("metrics") or {}).get("test") or {}).get("reliability")
        if bins:
            curves[f"{row.head} {row.head_id} (ECE {row.test_ece:.3f})"[:60]] = bins
    if not curves:
        return ""
    title = f"{dataset}: reliability on test"
    png = reliability_png(dict(list(curves.items())[:8]), title)
    return f'<h3>Calibration</h3><div class="pictures"><figure>{_img(png, title, "plot")}</figure></div>'


def _misclassified(rows: list[ReportRow], notes: list[str]) -> str:
    """Each head's misclassified test images as small pictures, true and predicted class under each."""
    from featstore.report.thumbnails import misclassified_thumbnails

    out = []
    for row in rows:
        if row.method != METHOD_HEAD or not row.folder:
            continue
        thumbs, note = misclassified_thumbnails(Path(row.folder))
        if note:
            notes.append(note)
        if not thumbs:
            continue
        figures = "".join(
            f'<figure><img class="thumb" alt="{escape(t.path)}" title="{escape(t.path)}" '
            f'src="data:image/jpeg;base64,{base64.b64encode(t.jpeg).decode("ascii")}">'
            f"<figcaption>{escape(t.caption)}</figcaption></figure>"
            for t in thumbs
        )
        out.append(f'<h4>{escape(row.head_id or "")}</h4><div class="thumbs">{figures}</div>')
    if not out:
        return ""
    return "<h3>Misclassified test images (most confident mistakes first)</h3>" + "".join(out)


def _plain_table(headings: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headings)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _searches(report: Report, dataset: str) -> str:
    """A dataset's sweeps (the whole grid: table and plot) and few-shot curves (table and plot)."""
    from featstore.plots import fewshot_png, sweep_png

    out = []
    for table in [t for t in report.sweeps if t.dataset == dataset]:
        title = sweep_heading(table)
        png = sweep_png(table.rows, f"{dataset}: {table.n_settings} settings ({table.run_id})")
        columns = sweep_columns(table.rows)
        rows = [sweep_cells(r, columns) for r in table.rows]
        out += [f"<h3>{escape(title)}</h3>", _plain_table([h for _, h, _ in columns], rows)]
        out.append(f'<div class="pictures"><figure>{_img(png, title, "plot")}</figure></div>')
    for curves in [c for c in report.fewshots if c.dataset == dataset]:
        title = fewshot_heading(curves)
        png = fewshot_png(curves.curves, f"{dataset}: test accuracy against shots ({curves.run_id})")
        out += [f"<h3>{escape(title)}</h3>", _plain_table(*fewshot_pivot(curves))]
        out.append(f'<div class="pictures"><figure>{_img(png, title, "plot")}</figure></div>')
    return "".join(out)


def _history(report: Report, row: ReportRow) -> dict | None:
    if row.run_id in report.histories:
        return report.histories[row.run_id]
    path = Path(row.folder or "") / "history.json"
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None


def _curves(report: Report, rows: list[ReportRow], notes: list[str]) -> str:
    from featstore.plots import learning_curves_png

    out = []
    for row in rows:
        if row.method in (METHOD_EXTRACT, METHOD_HEAD, METHOD_EVALUATE):
            continue
        path = Path(row.folder or "") / "learning_curves.png"
        history = None if path.is_file() else _history(report, row)
        if path.is_file():
            png = path.read_bytes()
        elif history:
            png = learning_curves_png(history, f"{row.method} {row.backbone or ''} ({row.run_id})")
        else:
            notes.append(f"{row.method} run {row.run_id}: no learning_curves.png and no history; no curves")
            continue
        caption = f"{row.run_id}: learning curves"
        out.append(
            f"<figure>{_img(png, caption, 'curve')}<figcaption>{escape(caption)}</figcaption></figure>"
        )
    return f'<h3>Learning curves</h3><div class="pictures">{"".join(out)}</div>' if out else ""


def _cards(rows: list[ReportRow]) -> str:
    out = []
    for row in rows:
        path = _card_path(row)
        if path is None:
            continue
        name = row.head_id or row.run_id
        out.append(
            f'<details id="{_anchor(row)}"><summary>Model card: {escape(name)} '
            f'(<a href="{escape(path.absolute().as_uri())}">card.md</a>)</summary>'
            f"<pre>{escape(path.read_text(errors='replace'))}</pre></details>"
        )
    return f"<h3>Model cards</h3>{''.join(out)}" if out else ""


def render_page(report: Report, layout: StoreLayout) -> str:
    """The HTML page of `report`: per dataset the sortable table, split notes, scatter plots of
    test accuracy against seconds and CO2, confusion matrices, misclassified thumbnails, sweep
    grids, few-shot curves, learning curves, inspections and model cards; then what was skipped."""
    notes = list(report.skipped)
    parts = [
        '<!doctype html><html lang="en"><head><meta charset="utf-8">',
        f"<title>featstore report</title><style>{_STYLE}</style></head><body>",
        "<h1>featstore report</h1>",
        f"<p>Store: <code>{escape(str(layout.root))}</code>; made {escape(time.strftime('%Y-%m-%d %H:%M'))}.</p>",
    ]
    if not report.rows:
        parts.append(
            "<p>No runs to compare (run <code>featstore extract</code> and <code>featstore fit-head</code>).</p>"
        )
    else:
        parts.append(f'<p class="note">{escape(TOTALS_NOTE.replace("`", ""))}</p>')
    if any(r.method == METHOD_EVALUATE for r in report.rows):
        parts.append(f'<p class="note">{escape(EVALUATE_NOTE.replace("`", ""))}</p>')
    for dataset, rows in by_dataset(report).items():
        parts += [f"<section><h2>{escape(dataset)}</h2>", _table(rows)]
        parts += [f'<p class="note split">{escape(line)}</p>' for line in split_notes(rows)]
        parts.append(_scatters(dataset, rows, notes))
        parts += [_confusions(rows, notes), _reliability(dataset, rows), _misclassified(rows, notes)]
        parts.append(_searches(report, dataset))
        parts += [_curves(report, rows, notes), render_inspections(layout, dataset, notes)]
        parts += [_cards(rows), "</section>"]
    shown = set(by_dataset(report))
    for dataset in inspected_datasets(layout):
        if dataset not in shown and report.dataset in (None, dataset):
            fragment = render_inspections(layout, dataset, notes)
            parts += [f"<section><h2>{escape(dataset)}</h2>", fragment, "</section>"]
    if notes:
        parts.append('<h2>Skipped</h2><ul class="skipped">')
        parts += [f"<li>{escape(n)}</li>" for n in notes]
        parts.append("</ul>")
    parts.append(f"<script>{_SCRIPT}</script></body></html>\n")
    return "\n".join(parts)


def render_html(report: Report, store: str | Path | None = None) -> str:
    """Render `report` as one self-contained HTML page (UTF-8 text ending in a newline) that loads
    nothing from the network; head and fine-tune folders are read from `store` (default the
    report's own)."""
    return render_page(report, resolve_store(store if store is not None else report.store))
