"""The comparison report as Markdown, and the columns, cells and notes the HTML page shares."""

from __future__ import annotations

from featstore.report.model import METHOD_EVALUATE, METHOD_EXTRACT, Report, ReportRow, by_dataset


def _num(x, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def _params(n) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:.2f} M" if n >= 100_000 else f"{n:,}"


#: (field, heading, formatter) of each table column, shared by the Markdown and HTML tables.
COLUMNS = [
    ("method", "method", str),
    ("backbone", "backbone", lambda v: v or "-"),
    ("head", "head", lambda v: v or "-"),
    ("epochs", "epochs", lambda v: _num(v, "d")),
    ("train_accuracy", "train acc", lambda v: _num(v, ".1%")),
    ("val_accuracy", "val acc", lambda v: _num(v, ".1%")),
    ("test_accuracy", "test acc", lambda v: _num(v, ".1%")),
    ("test_macro_f1", "macro F1", lambda v: _num(v, ".3f")),
    ("cv_accuracy", "cv acc", lambda v: _num(v, ".1%")),
    ("cv_std", "cv std", lambda v: _num(v, ".1%")),
    ("test_ece", "test ECE", lambda v: _num(v, ".3f")),
    ("total_seconds", "wall s", lambda v: _num(v, ".3g")),
    ("images_per_s", "images/s", lambda v: _num(v, ",.0f")),
    ("params_total", "params", _params),
    ("params_trainable", "trainable", _params),
    ("gflops_per_image", "GFLOPs/image", lambda v: _num(v, ".3g")),
    ("total_energy_kwh", "kWh", lambda v: _num(v, ".3g")),
    ("total_co2_kg", "kg CO2", lambda v: _num(v, ".3g")),
    ("id", "id", str),
]
TOTALS_NOTE = (
    "Wall time, energy and CO2 of a head include the extraction of the features it used "
    "(counted once per head); `--json` also has each run's own figures. "
    "Energy and CO2 marked ~ are codecarbon estimates (no power counters)."
)
EVALUATE_NOTE = (
    "An `evaluate` row is a saved head (id) scored on the feature set of its dataset and backbone: "
    "test acc and macro F1 are on every labelled image of that set; wall s is the scoring."
)
EMPTY_NOTE = "No runs to compare (run `featstore extract` and `featstore fit-head`)."


def cells(row: ReportRow) -> list[str]:
    """The table cells of `row`, formatted (`id` is the head id, else the run id)."""
    out = []
    for name, _, fmt in COLUMNS:
        value = (row.head_id or row.run_id) if name == "id" else getattr(row, name)
        text = fmt(value)
        if name in ("total_energy_kwh", "total_co2_kg") and value is not None and row.emissions_estimated:
            text = "~" + text
        out.append(text)
    return out


def split_notes(rows: list[ReportRow]) -> list[str]:
    """One line per distinct split note of the head and fine-tune rows, naming the runs when the
    note is not every row's."""
    trained = [r for r in rows if r.method not in (METHOD_EXTRACT, METHOD_EVALUATE)]
    notes: dict[str, list[str]] = {}
    for row in trained:
        if row.split_note:
            notes.setdefault(row.split_note, []).append(row.head_id or row.run_id)
    return [
        f"Split: {note}" + ("" if len(ids) == len(trained) else f" ({', '.join(ids)})")
        for note, ids in notes.items()
    ]


#: (key, heading, formatter) of each column of a sweep's grid table.
SWEEP_COLUMNS = [
    ("rank", "rank", lambda v: _num(v, "d")),
    ("setting", "setting", str),
    ("features", "features", str),
    ("val_accuracy", "val acc", lambda v: _num(v, ".1%")),
    ("cv_accuracy", "cv acc", lambda v: _num(v, ".1%")),
    ("cv_std", "cv std", lambda v: _num(v, ".1%")),
    ("test_accuracy", "test acc", lambda v: _num(v, ".1%")),
    ("fit_seconds", "fit s", lambda v: _num(v, ".3g")),
    ("chosen", "chosen", lambda v: v or ""),
    ("head_id", "head", lambda v: v or ""),
]


def sweep_columns(rows: list[dict]) -> list[tuple]:
    """The columns of a sweep's grid table: the cross-validation ones when it chose so, else the
    validation one."""
    cv = any(r.get("cv_accuracy") is not None for r in rows)
    hidden = ("val_accuracy",) if cv else ("cv_accuracy", "cv_std")
    return [c for c in SWEEP_COLUMNS if c[0] not in hidden]


def sweep_cells(row: dict, columns: list[tuple]) -> list[str]:
    """The cells of one setting of a sweep's grid (a failed setting says why in `chosen`)."""
    out = [fmt(row.get(key)) for key, _, fmt in columns]
    if row.get("error"):
        out[[key for key, _, _ in columns].index("chosen")] = f"failed: {row['error']}"
    return out


def sweep_heading(table) -> str:
    """`Sweep <run id>: 22 settings on a@x, a@y and a@x+a@y`."""
    return f"Sweep {table.run_id}: {table.n_settings} settings on {', '.join(table.feature_sets)}"


def fewshot_heading(curves) -> str:
    """`Few-shot <run id> (sweep): test accuracy, mean ± std over 5 draws (seeds 0-4)`."""
    seeds = curves.seeds
    span = f"seeds {seeds[0]}-{seeds[-1]}" if len(seeds) > 1 else f"seed {seeds[0]}" if seeds else "no seed"
    return (
        f"Few-shot {curves.run_id} ({curves.mode}): test accuracy, mean ± std over "
        f"{curves.repeats} draws ({span}) per number of training images per class"
    )


def fewshot_pivot(curves) -> tuple[list[str], list[list[str]]]:
    """The few-shot table: headings (head, features, each shots value) and a row of `47.6 % ± 8.4`
    cells per head and features."""
    shots = sorted({c["shots"] for c in curves.curves})
    keys = list(dict.fromkeys((c["head"], c["features"]) for c in curves.curves))
    cell = {(c["head"], c["features"], c["shots"]): c for c in curves.curves}
    rows = []
    for head, features in keys:
        row = [head, features]
        for k in shots:
            c = cell.get((head, features, k))
            row.append("-" if c is None else f"{100 * c['mean']:.1f} % ± {100 * (c.get('std') or 0):.1f}")
        rows.append(row)
    return ["head", "features", *[str(k) for k in shots]], rows


def _md_table(headings: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(headings) + " |", "|" + "|".join("---" for _ in headings) + "|"]
    return lines + ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]


def _searches(report: Report, dataset: str) -> list[str]:
    """The Markdown of a dataset's sweeps (their whole grids) and few-shot curves."""
    lines = []
    for table in [t for t in report.sweeps if t.dataset == dataset]:
        columns = sweep_columns(table.rows)
        lines += [
            f"### {sweep_heading(table)}",
            "",
            *_md_table([h for _, h, _ in columns], [sweep_cells(r, columns) for r in table.rows]),
            "",
        ]
    for curves in [c for c in report.fewshots if c.dataset == dataset]:
        lines += [f"### {fewshot_heading(curves)}", "", *_md_table(*fewshot_pivot(curves)), ""]
    return lines


def _table(rows: list[ReportRow]) -> list[str]:
    """The Markdown lines of one dataset's table (`|` in a cell escaped)."""
    lines = ["| " + " | ".join(h for _, h, _ in COLUMNS) + " |"]
    lines.append("|" + "|".join("---" for _ in COLUMNS) + "|")
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in cells(r)) + " |" for r in rows]
    return lines


def render_markdown(report: Report) -> str:
    """Render the report as Markdown: one table per dataset, each followed by its split notes,
    its sweeps' whole grids and its few-shot curves (skipped notes are not included)."""
    lines = ["# featstore report", "", f"Store: `{report.store}`.", ""]
    if not report.rows:
        return "\n".join([*lines, EMPTY_NOTE, ""])
    lines += [TOTALS_NOTE, ""]
    if any(r.method == METHOD_EVALUATE for r in report.rows):
        lines += [EVALUATE_NOTE, ""]
    for name, rows in by_dataset(report).items():
        lines += [f"## {name}", "", *_table(rows), ""]
        notes = split_notes(rows)
        if notes:
            lines += [*notes, ""]
        lines += _searches(report, name)
    return "\n".join(lines)
