"""The report's view of sweeps (a row per saved head, one for the sweep, its ranked grid) and
few-shot runs (their curves)."""

from __future__ import annotations

import json

from featstore.report.model import METHOD_SWEEP, FewShotCurves, ReportRow, SweepTable
from featstore.report.rows import Rows, costs_with, head_row, set_backbones, split_of
from featstore.store.layout import StoreLayout
from featstore.store.runlog import FewShotRecord, FitRecord, SweepRecord


def sweep_rows(rows: Rows, index: int, run: SweepRecord) -> list[ReportRow]:
    """The rows of a sweep: each head it saved (still in the store), then the sweep itself."""
    out = []
    for head in run.heads or []:
        fit = FitRecord(
            run.id,
            "sweep",  # a head the sweep saved: a note about it names the sweep
            time=run.time,
            seconds=head.get("fit_seconds"),
            head_id=head.get("head_id"),
            kind=head.get("kind"),
            feature_sets=str(head.get("features") or "").split("+"),
        )
        row = head_row(rows, index, fit)
        if row is not None:
            out.append(row)
    best = (run.heads or [{}])[0]
    sets = str(best.get("features") or (run.feature_sets or ["?"])[0]).split("+")
    deps = rows.producers(run.id, sets, index)
    backbone = set_backbones(rows, sets)
    out.append(
        ReportRow(
            dataset=run.dataset or sets[0].split("@")[0],
            method=METHOD_SWEEP,
            backbone=backbone["backbone"],
            head=f"{run.n_settings} settings",
            val_accuracy=best.get("val_accuracy"),
            test_accuracy=best.get("test_accuracy"),
            test_macro_f1=best.get("test_macro_f1"),
            params_total=backbone["params"],
            gflops_per_image=backbone["gflops"],
            **costs_with(run, deps),
            run_id=run.id,
            feature_sets=list(run.feature_sets or []),
            depends_on=[r.id for r in deps],
            time=run.time,
            **split_of(run.split),
        )
    )
    return out


def sweep_table(layout: StoreLayout, run: SweepRecord, skipped: list[str]) -> SweepTable | None:
    """The whole grid of sweep `run` from its table file (`heads/comparisons/<run id>.json` of
    this store, so a moved store still reads); None (with a note) when it is gone."""
    path = layout.heads / "comparisons" / f"{run.id}.json"
    try:
        doc = json.loads(path.read_text())
        rows = list(doc["rows"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        skipped.append(f"sweep run {run.id}: its table {path} cannot be read ({err}); grid left out")
        return None
    sets = list(run.feature_sets or [])
    return SweepTable(run.id, run.dataset or "?", sets, run.n_settings, rows, run.time)


def fewshot_curves(run: FewShotRecord) -> FewShotCurves:
    """The curves of few-shot run `run`, as logged."""
    lists = (list(run.shots or []), run.repeats, list(run.seeds or []), list(run.curves or []))
    return FewShotCurves(run.id, run.dataset or "?", run.mode, *lists, run.time)
