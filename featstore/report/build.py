"""`featstore report`: every recorded run of the store's run log as a row, grouped by dataset,
best test accuracy first, with the sweeps' grids and few-shot curves."""

from __future__ import annotations

from pathlib import Path

from featstore.report import searches
from featstore.report.model import Report, ReportRow
from featstore.report.rows import (
    Recipes,
    Rows,
    evaluate_row,
    extract_row,
    extracts_by_set,
    finetune_row,
    head_row,
    producer,
)
from featstore.store.layout import StoreLayout, resolve_store
from featstore.store.runlog import (
    EvaluateRecord,
    FewShotRecord,
    FinetuneRecord,
    FitRecord,
    RunRecord,
    SweepRecord,
    read_records,
)


def _run_rows(rows: Rows, index: int, run: RunRecord, report: Report) -> list[ReportRow]:
    """The rows of log record `run`; a sweep's grid and a few-shot run's curves go to `report`."""
    if isinstance(run, SweepRecord):
        table = searches.sweep_table(rows.layout, run, report.skipped)
        if table is not None:
            report.sweeps.append(table)
        return searches.sweep_rows(rows, index, run)
    if isinstance(run, FewShotRecord):
        report.fewshots.append(searches.fewshot_curves(run))
        return []
    row = _run_row(rows, index, run, report.histories)
    return [] if row is None else [row]


def _run_row(rows: Rows, index: int, run: RunRecord, histories: dict) -> ReportRow | None:
    """The row of log record `run` (None for an extract, score or unknown command)."""
    match run:
        case EvaluateRecord():
            return evaluate_row(rows, run)
        case FitRecord():
            return head_row(rows, index, run)
        case FinetuneRecord():
            row = finetune_row(rows, run)
            if row is not None and run.history:
                histories[run.id] = run.history
            return row
    return None


def _keep_dataset(report: Report, dataset: str) -> None:
    """Keep only the rows of `dataset`; note the datasets there are when it has none."""
    have = sorted({r.dataset for r in report.rows})
    report.dataset = dataset
    report.rows[:] = [r for r in report.rows if r.dataset == dataset]
    report.sweeps[:] = [t for t in report.sweeps if t.dataset == dataset]
    report.fewshots[:] = [c for c in report.fewshots if c.dataset == dataset]
    if not report.rows and have:
        report.skipped.append(f"no run of dataset {dataset!r}; datasets with runs: {', '.join(have)}")


def _sort_key(row: ReportRow):
    acc = row.test_accuracy
    return (row.dataset, acc is None, -(acc or 0.0), row.time or "")


def build_report(store: StoreLayout | str | Path | None = None, dataset: str | None = None) -> Report:
    """Collect one row per recorded run of `store`'s log (only `dataset`'s when given).

    Returns
    -------
    Report
        `rows` (extracts, heads, sweeps and their heads, fine-tune runs, evaluations under the
        dataset they scored) by dataset, then test accuracy (extract rows last); `sweeps`
        (grids), `fewshots` (curves), and `skipped` (unreadable lines, deleted heads, missing
        extractions and why).
    """
    layout = resolve_store(store)
    records, skipped = read_records(layout)
    extracts = extracts_by_set(records)
    recorded = {fs: r.recipe for fs, runs in extracts.items() for _, r in runs if r.recipe}
    rows = Rows(layout, extracts, skipped, Recipes(layout, recorded))
    report = Report(
        str(layout.root), [extract_row(rows, producer(runs, None)[1]) for runs in extracts.values()], skipped
    )
    for i, run in enumerate(records):
        report.rows += _run_rows(rows, i, run, report)
    if dataset is not None:
        _keep_dataset(report, dataset)
    report.rows.sort(key=_sort_key)
    return report
