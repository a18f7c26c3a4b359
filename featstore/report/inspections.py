"""The report's look inside the embeddings: the latest `featstore inspect` result of each check and
feature set, as one HTML fragment."""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path

from featstore.inspect.results import CHECKS, Inspection, read_inspection
from featstore.store.layout import StoreLayout
from featstore.store.runlog import read_runs

#: Rows shown per table (the result file in the store holds every finding).
MAX_ROWS = 20
#: Paths listed per duplicate cluster before "and N more".
MAX_PATHS = 4


def inspect_runs(layout: StoreLayout, dataset: str | None = None) -> list[dict]:
    """The latest `inspect` run of each (check, feature sets) of `dataset` (None: all), in check order."""
    runs, _ = read_runs(layout)
    latest: dict[tuple, dict] = {}
    for run in runs:
        if run.get("command") != "inspect" or (dataset is not None and run.get("dataset") != dataset):
            continue
        latest[(run.get("check"), tuple(run.get("feature_sets") or ()))] = run
    order = {check: i for i, check in enumerate(CHECKS)}
    return sorted(
        latest.values(), key=lambda r: (order.get(r.get("check"), len(order)), r.get("feature_sets") or [])
    )


def inspected_datasets(layout: StoreLayout) -> list[str]:
    """The datasets with at least one logged `inspect` run, sorted."""
    return sorted({str(r.get("dataset")) for r in inspect_runs(layout) if r.get("dataset")})


def render_inspections(layout: StoreLayout, dataset: str, notes: list[str] | None = None) -> str:
    """The HTML fragment of `dataset`'s latest inspections in `layout` ("" when none): per run the
    summary, a sortable table of the first `MAX_ROWS` findings, the map; a line goes to `notes`
    per result file deleted or unreadable."""
    blocks = []
    for run in inspect_runs(layout, dataset):
        result = _result(layout, run, notes)
        if result is None:
            continue
        render = _RENDER.get(result.check)
        if render is not None:
            blocks.append(f'<div class="inspection">{render(layout, result)}</div>')
    return "<h3>Inspections</h3>" + "".join(blocks) if blocks else ""


def _result(layout: StoreLayout, run: dict, notes: list[str] | None) -> Inspection | None:
    path = layout.root / str(run.get("result") or f"inspections/{run.get('id')}.json")
    try:
        return read_inspection(path)
    except (OSError, ValueError, TypeError) as err:
        if notes is not None:
            why = "is missing" if isinstance(err, FileNotFoundError) else f"cannot be read ({err})"
            notes.append(f"inspect run {run.get('id')} ({run.get('check')}): {path} {why}; left out")
        return None


def _cell(value) -> str:
    if isinstance(value, bool):
        return f"<td>{'yes' if value else 'no'}</td>"
    if isinstance(value, (int, float)):
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        return f'<td class="num" data-v="{value}">{escape(text)}</td>'
    return f"<td>{escape('-' if value is None else str(value))}</td>"


def _table(rows: list[dict], columns: list[str]) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(_cell(r.get(c)) for c in columns) + "</tr>" for r in rows)
    return f'<div class="wide"><table class="sortable"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _title(result: Inspection, what: str) -> str:
    sets = " against ".join(result.feature_sets)
    when = f" (run {result.run_id})"
    return f"<h4>{escape(what)}: {escape(sets)}{escape(when)}</h4>"


def _notes(result: Inspection) -> str:
    return "".join(f'<p class="note">{escape(n)}</p>' for n in result.notes)


def _more(n_all: int, n_shown: int, result: Inspection) -> str:
    if n_all <= n_shown:
        return ""
    return f'<p class="note">First {n_shown} of {n_all}; all of them in {escape(str(result.path))}.</p>'


def _duplicates(layout: StoreLayout, result: Inspection) -> str:
    s, t = result.summary, result.options.get("threshold")
    text = (
        f"{s.get('n_images')} images: {s.get('n_exact_groups')} group(s) of identical files, "
        f"{s.get('n_near_clusters')} near-duplicate cluster(s) ({s.get('n_near_images')} images) at cosine "
        f">= {t}; {s.get('n_mixed_label_clusters')} cluster(s) mix labels."
    )
    rows = []
    for g in result.groups[:MAX_ROWS]:
        paths = g.get("paths") or []
        shown = ", ".join(paths[:MAX_PATHS]) + (
            f" and {len(paths) - MAX_PATHS} more" if len(paths) > MAX_PATHS else ""
        )
        labels = ", ".join(f"{k} {v}" for k, v in (g.get("labels") or {}).items())
        rows.append({**g, "labels": labels, "paths": shown})
    columns = ["cluster", "kind", "n_images", "max_similarity", "mixed_labels", "labels", "paths"]
    return (
        _title(result, "Duplicates")
        + f"<p>{escape(text)}</p>"
        + _notes(result)
        + (_table(rows, columns) if rows else "")
        + _more(len(result.groups), len(rows), result)
    )


def _leaks(layout: StoreLayout, result: Inspection) -> str:
    s, t = result.summary, result.options.get("threshold")
    parts = "; ".join(
        f"{p.get('part')}: {p.get('n_leaked')} of {p.get('n_images')} images against {_names(p.get('compared_with'))}"
        for p in s.get("parts") or []
    )
    rows = result.rows(MAX_ROWS)
    return (
        _title(result, "Leaks")
        + f"<p>{escape(f'Near duplicates at cosine >= {t}: {parts}.')}</p>"
        + _notes(result)
        + (_table(rows, result.columns) if rows else "")
        + _more(len(result.items), len(rows), result)
    )


def _names(value) -> str:
    return ", ".join(value) if isinstance(value, list) else str(value)


def _labels(layout: StoreLayout, result: Inspection) -> str:
    s = result.summary
    text = (
        f"{s.get('n_issues')} likely label error(s) among {s.get('n_labelled')} labelled images "
        f"({s.get('head')}, {s.get('folds')}-fold cross-validated accuracy {s.get('cv_accuracy')}; {s.get('method')})."
    )
    rows = result.rows(MAX_ROWS)
    return (
        _title(result, "Likely label errors")
        + f"<p>{escape(text)}</p>"
        + _notes(result)
        + (_table(rows, result.columns) if rows else "")
        + _more(len(result.items), len(rows), result)
    )


def _map(layout: StoreLayout, result: Inspection) -> str:
    path = Path(result.picture) if result.picture else layout.root / "inspections" / f"{result.run_id}.png"
    if not path.is_file():  # a store moved since: look beside the result file
        path = Path(result.path or "").with_suffix(".png")
    png = path.read_bytes() if path.is_file() else b""
    s = result.summary
    caption = f"{s.get('method')} map of {s.get('n_images')} images" + (
        f"; {s.get('n_misclassified')} misclassified by a cross-validated {s.get('head')} head (ringed in black)"
        if s.get("n_misclassified") is not None
        else ""
    )
    if not png.startswith(b"\x89PNG"):
        return _title(result, "Map") + f'<p class="note">{escape(f"{path} is missing; no picture")}</p>'
    data = base64.b64encode(png).decode("ascii")
    img = f'<img class="plot" alt="{escape(caption)}" src="data:image/png;base64,{data}">'
    return (
        _title(result, "Map")
        + f"<figure>{img}<figcaption>{escape(caption)}</figcaption></figure>"
        + _notes(result)
        + _table(result.rows(), result.columns)
    )


_RENDER = {"duplicates": _duplicates, "leaks": _leaks, "labels": _labels, "map": _map}
