"""The comparison report's rows: one `ReportRow` per recorded run (extract, fit-head, finetune,
evaluate; a sweep's saved heads and the sweep), built by keyword from the typed run records of
the run log, grouped by dataset, best test accuracy first; sweeps' grids and few-shot curves.

Imports `store` (the run log's `read_records`, head folders), `errors`, `heads.registry` (a
head's trainable parameters, counted by its kind; no scikit-learn) and `report.figures`
(backbone parameters and GFLOPs); `report.searches` (sweeps and few-shot runs) inside
`_run_rows`. Rendering lives in `report.markdown` and `report.html`; this module imports them
only inside `Report.to_markdown` and `Report.to_html`. Never imports TensorFlow or matplotlib.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from featstore.errors import StoreError, UnknownHeadError
from featstore.heads.registry import head_params
from featstore.report.figures import figures_of, sum_known
from featstore.store.head_files import head_dir, read_meta
from featstore.store.layout import StoreLayout, resolve_store
from featstore.store.runlog import (
    EvaluateRecord,
    ExtractRecord,
    FewShotRecord,
    FinetuneRecord,
    FitRecord,
    RunRecord,
    SweepRecord,
    read_records,
)

METHOD_EXTRACT = "extract"
METHOD_HEAD = "frozen features + head"
METHOD_EVALUATE = "evaluate"
FINETUNE_METHODS = ("fine-tune", "scratch")


@dataclass(kw_only=True)
class ReportRow:
    """One recorded run: accuracies are fractions 0..1, costs in s, kWh and kg CO2.

    `seconds`, `energy_kwh` and `co2_kg` are the run's own figures; the `total_` ones add, for
    a head, the extract run that produced each feature set it used (counted once per head).
    `params_total` counts backbone + head, `params_trainable` what the run trained (None for
    svm and knn, which have no fixed parameter count). `gflops_per_image` is the backbone's
    forward pass at the input size used. `depends_on` lists the run ids counted in the totals.

    An `evaluate` row is a saved head scored on another feature set: its dataset and backbone
    are the evaluated set's, `test_accuracy` and `test_macro_f1` are the figures on every
    labelled image of that set, `seconds` the evaluation's. `split` is how a head or fine-tune
    run split its images (stored, stratified or hash) and `split_note` the one line saying
    how stored parts were re-mapped (e.g. val used as the test set), else None.

    Built by keyword; the field order is the order of the `--json` keys and `--csv` columns.
    """

    dataset: str
    method: str
    backbone: str | None = None
    head: str | None = None
    epochs: int | None = None
    train_accuracy: float | None = None
    val_accuracy: float | None = None
    test_accuracy: float | None = None
    test_macro_f1: float | None = None
    seconds: float | None = None
    total_seconds: float | None = None
    images_per_s: float | None = None
    params_total: int | None = None
    params_trainable: int | None = None
    gflops_per_image: float | None = None
    energy_kwh: float | None = None
    total_energy_kwh: float | None = None
    co2_kg: float | None = None
    total_co2_kg: float | None = None
    emissions_estimated: bool | None = None
    run_id: str
    head_id: str | None = None
    folder: str | None = None
    feature_sets: list[str] = field(default_factory=list)
    depends_on: list[str] = field(default_factory=list)
    time: str | None = None
    split: str | None = None
    split_note: str | None = None

    def to_dict(self) -> dict:
        """Return a JSON-ready dict (keys are the field names)."""
        return asdict(self)


@dataclass
class Report:
    """Rows grouped by dataset (best test accuracy first) and what was left out, and why; the
    sweeps' whole grids (`sweeps`, `report.searches.SweepTable`) and the few-shot curves
    (`fewshots`, `report.searches.FewShotCurves`), in log order; `dataset` the one dataset
    kept (`build_report(dataset=...)`), None for all."""

    store: str
    rows: list[ReportRow]
    skipped: list[str]
    histories: dict[str, dict] = field(default_factory=dict, repr=False)
    sweeps: list = field(default_factory=list)
    fewshots: list = field(default_factory=list)
    dataset: str | None = None

    def to_dict(self) -> dict:
        """Return a JSON-ready dict of rows, sweeps, few-shot curves and skipped notes."""
        return {
            "store": self.store,
            "rows": [r.to_dict() for r in self.rows],
            "sweeps": [t.to_dict() for t in self.sweeps],
            "fewshots": [c.to_dict() for c in self.fewshots],
            "skipped": self.skipped,
        }

    def to_markdown(self) -> str:
        """Return the report as Markdown (see `featstore.report.markdown.render_markdown`)."""
        from featstore.report.markdown import render_markdown

        return render_markdown(self)

    def to_html(self) -> str:
        """Return the report as one self-contained HTML page (see `featstore.report.html`)."""
        from featstore.report.html import render_html

        return render_html(self)


def by_dataset(report: Report) -> dict[str, list[ReportRow]]:
    """The rows of `report` per dataset, in report order."""
    groups: dict[str, list[ReportRow]] = {}
    for row in report.rows:
        groups.setdefault(row.dataset, []).append(row)
    return groups


def _estimated(runs: list[RunRecord]) -> bool | None:
    """Whether any run's energy was estimated; None when no run says."""
    flags = [run.emissions_estimated() for run in runs]
    return None if all(f is None for f in flags) else any(bool(f) for f in flags)


def _own_costs(run: RunRecord) -> dict:
    """The cost fields of a row that counts its own run only (the totals are its figures)."""
    return {
        "seconds": run.seconds,
        "total_seconds": run.seconds,
        "energy_kwh": run.energy_kwh,
        "total_energy_kwh": run.energy_kwh,
        "co2_kg": run.co2_kg,
        "total_co2_kg": run.co2_kg,
        "emissions_estimated": _estimated([run]),
    }


def _costs_with(run: RunRecord, deps: list[ExtractRecord]) -> dict:
    """The cost fields of a head row: its own figures, and totals that add the extract runs
    `deps` that produced its features (unknown when any is)."""
    runs = [run, *deps]
    return {
        "seconds": run.seconds,
        "total_seconds": sum_known([r.seconds for r in runs]),
        "energy_kwh": run.energy_kwh,
        "total_energy_kwh": sum_known([r.energy_kwh for r in runs]),
        "co2_kg": run.co2_kg,
        "total_co2_kg": sum_known([r.co2_kg for r in runs]),
        "emissions_estimated": _estimated(runs),
    }


def _metric(metrics: dict, part: str, key: str = "accuracy"):
    """`metrics[part][key]`, None when either is missing."""
    return ((metrics or {}).get(part) or {}).get(key)


def _part_metrics(metrics: dict) -> dict:
    """The accuracy fields of a row from metrics per part (`{"train"|"val"|"test": {...}}`)."""
    return {
        "train_accuracy": _metric(metrics, "train"),
        "val_accuracy": _metric(metrics, "val"),
        "test_accuracy": _metric(metrics, "test"),
        "test_macro_f1": _metric(metrics, "test", "macro_f1"),
    }


def _split_of(split: dict | None) -> dict:
    """The `split` (source) and `split_note` fields of a recorded split description."""
    split = split if isinstance(split, dict) else {}
    return {"split": split.get("source"), "split_note": split.get("note") or None}


def _producer(
    candidates: list[tuple[int, ExtractRecord]], before: int | None
) -> tuple[int, ExtractRecord] | None:
    """The extract run that produced a feature set: the latest (before `before`) that computed rows."""
    eligible = [(i, r) for i, r in candidates if before is None or i < before]
    computed = [(i, r) for i, r in eligible if _computed(r)]
    return (computed or eligible or [None])[-1]


def _computed(run: ExtractRecord) -> bool:
    """True when the extract run computed or removed rows (a re-run that reused all did not)."""
    counts = run.counts if isinstance(run.counts, dict) else {}
    return bool(counts.get("n_computed") or counts.get("n_removed"))


def _set_backbones(sets: list[str]) -> dict:
    """The backbone label (`a+b` for joined sets), params and GFLOPs of feature sets `sets`."""
    labels = [fs.split("@", 1)[-1] for fs in sets]
    params, gflops = figures_of(labels)
    return {"backbone": "+".join(labels), "params": params, "gflops": gflops}


def _extract_row(run: ExtractRecord) -> ReportRow:
    """Row of the extract run that produced a feature set."""
    params, gflops = figures_of([run.backbone or ""])
    return ReportRow(
        dataset=run.dataset or run.feature_set.split("@")[0],
        method=METHOD_EXTRACT,
        backbone=run.backbone,
        images_per_s=run.images_per_s,
        params_total=params,
        params_trainable=0,
        gflops_per_image=gflops,
        **_own_costs(run),
        run_id=run.id,
        feature_sets=[run.feature_set],
        time=run.time,
    )


@dataclass
class _Rows:
    """What the row builders share: the store, the extract runs of each feature set (with their
    index in the log) and the notes of what was left out."""

    layout: StoreLayout
    extracts: dict[str, list[tuple[int, ExtractRecord]]]
    skipped: list[str]

    def head_meta(self, what: str, run: FitRecord) -> dict | None:
        """meta.json of the head of `run` (a `what` run), or None with a note when it is gone."""
        try:
            return read_meta(self.layout, run.head_id)
        except UnknownHeadError:
            self.skipped.append(
                f"{what} run {run.id}: head {run.head_id} is no longer in {self.layout.heads}; left out"
            )
        except StoreError as err:
            self.skipped.append(f"{what} run {run.id}: {err}; left out")
        return None

    def producers(self, head_id: str, sets: list[str], index: int) -> list[ExtractRecord]:
        """The extract run that produced each of `sets` before log line `index` (once each)."""
        deps = []
        for fs in dict.fromkeys(sets):
            found = _producer(self.extracts.get(fs, []), before=index)
            if found is None:
                self.skipped.append(
                    f"head {head_id}: no extract run of {fs} in the run log; its totals count the fit only"
                )
            else:
                deps.append(found[1])
        return deps


def _head_epochs(folder: Path) -> int | None:
    """Epochs of a dense head (the length of its history.json's loss), else None."""
    if not (folder / "history.json").is_file():
        return None
    try:
        return len(json.loads((folder / "history.json").read_text()).get("loss", [])) or None
    except (OSError, ValueError):
        return None


def _head_row(rows: _Rows, index: int, run: FitRecord) -> ReportRow | None:
    """Row of a fit-head run; its totals add the extractions of its features. None (with a
    note) when the head folder is gone or unreadable."""
    meta = rows.head_meta(run.command or "fit-head", run)
    if meta is None:
        return None
    folder = head_dir(rows.layout, run.head_id)
    sets = list(meta.get("feature_sets") or run.feature_sets or [])
    deps = rows.producers(run.head_id, sets, index)
    backbone = _set_backbones(sets)
    trainable = head_params(meta)
    return ReportRow(
        dataset=sets[0].split("@")[0] if sets else "?",
        method=METHOD_HEAD,
        backbone=backbone["backbone"],
        head=meta.get("config", {}).get("kind", run.kind),
        epochs=_head_epochs(folder),
        **_part_metrics(meta.get("metrics", {})),
        images_per_s=meta.get("predict_images_per_s"),
        params_total=None if backbone["params"] is None else backbone["params"] + (trainable or 0),
        params_trainable=trainable,
        gflops_per_image=backbone["gflops"],
        **_costs_with(run, deps),
        run_id=run.id,
        head_id=run.head_id,
        folder=str(folder),
        feature_sets=sets,
        depends_on=[r.id for r in deps],
        time=run.time,
        **_split_of(meta.get("split")),
    )


def _finetune_row(rows: _Rows, run: FinetuneRecord) -> ReportRow | None:
    """Row of a finetune run (fine-tune or scratch); parameters and GFLOPs default to the
    catalog's for a registry backbone, the folder to store/finetune/<id>. None (with a note)
    for another method."""
    if run.method not in FINETUNE_METHODS:
        rows.skipped.append(
            f"finetune run {run.id}: method {run.method!r} is not fine-tune or scratch; left out"
        )
        return None
    history = run.history or {}
    params, gflops = figures_of([run.backbone]) if run.backbone else (None, None)
    folder = Path(run.folder) if run.folder else rows.layout.finetune / run.id
    return ReportRow(
        dataset=run.dataset or "?",
        method=run.method,
        backbone=run.backbone,
        head=run.head,
        epochs=run.epochs or len(history.get("loss", [])) or None,
        **_part_metrics(run.metrics),
        images_per_s=run.images_per_s,
        params_total=params if run.params_total is None else run.params_total,
        params_trainable=run.params_trainable,
        gflops_per_image=gflops if run.gflops_per_image is None else run.gflops_per_image,
        **_own_costs(run),
        run_id=run.id,
        folder=str(folder),
        feature_sets=list(run.feature_sets or []),
        time=run.time,
        **_split_of(run.split or run.counts),
    )


def _evaluate_row(rows: _Rows, run: EvaluateRecord) -> ReportRow | None:
    """Row of an evaluate run: a saved head's accuracy and macro F1 on every labelled row of
    the evaluated sets, under their dataset. None (with a note) when the head is gone."""
    meta = rows.head_meta("evaluate", run)
    if meta is None:
        return None
    sets = list(run.feature_sets or [])
    metrics = run.metrics or {}
    backbone = _set_backbones(sets)
    trained = head_params(meta)
    return ReportRow(
        dataset=run.dataset or (sets[0].split("@")[0] if sets else "?"),
        method=METHOD_EVALUATE,
        backbone=backbone["backbone"],
        head=run.kind or meta.get("config", {}).get("kind"),
        test_accuracy=metrics.get("accuracy"),
        test_macro_f1=metrics.get("macro_f1"),
        seconds=run.seconds,
        total_seconds=run.seconds,
        images_per_s=run.images_per_s,
        params_total=None if backbone["params"] is None else backbone["params"] + (trained or 0),
        params_trainable=0,
        gflops_per_image=backbone["gflops"],
        run_id=run.id,
        head_id=run.head_id,
        feature_sets=sets,
        time=run.time,
    )


def _extracts_by_set(records: list[RunRecord]) -> dict[str, list[tuple[int, ExtractRecord]]]:
    """The extract runs of each feature set, with their index in the log, in log order."""
    extracts: dict[str, list[tuple[int, ExtractRecord]]] = {}
    for i, run in enumerate(records):
        if isinstance(run, ExtractRecord) and run.feature_set:
            extracts.setdefault(run.feature_set, []).append((i, run))
    return extracts


def _run_rows(rows: _Rows, index: int, run: RunRecord, report: Report) -> list[ReportRow]:
    """The rows of log record `run` (none for an extract, score or unknown command: extract
    rows are one per feature set); a sweep's grid and a few-shot run's curves go to `report`."""
    from featstore.report import searches

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


def _run_row(rows: _Rows, index: int, run: RunRecord, histories: dict) -> ReportRow | None:
    """The row of log record `run` (None for an extract, score or unknown command: extract
    rows are one per feature set)."""
    match run:
        case EvaluateRecord():
            return _evaluate_row(rows, run)
        case FitRecord():
            return _head_row(rows, index, run)
        case FinetuneRecord():
            row = _finetune_row(rows, run)
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
    """Collect one row per recorded run from the store's run log, grouped and sorted.

    Parameters
    ----------
    store
        Store root or layout (default `$FEATSTORE_HOME`, else `./store`).
    dataset
        Keep only the rows of this dataset.

    Returns
    -------
    Report
        `rows` (extract, fit-head, finetune and evaluate runs; a sweep's saved heads and the
        sweep itself; an evaluate run under the dataset of the feature set it scored) sorted by
        dataset, then test accuracy (best first; extract rows last); `sweeps` (each sweep's
        whole grid) and `fewshots` (few-shot curves);
        `skipped` names every unreadable line, deleted head or missing extraction and why.
    """
    layout = resolve_store(store)
    records, skipped = read_records(layout)
    rows = _Rows(layout, _extracts_by_set(records), skipped)
    report = Report(
        str(layout.root), [_extract_row(_producer(runs, None)[1]) for runs in rows.extracts.values()], skipped
    )
    for i, run in enumerate(records):
        report.rows += _run_rows(rows, i, run, report)
    if dataset is not None:
        _keep_dataset(report, dataset)
    report.rows.sort(key=_sort_key)
    return report
