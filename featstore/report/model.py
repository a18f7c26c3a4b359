"""The comparison report's data: one `ReportRow` per recorded run, the `Report` that groups them
by dataset, and the sweeps' grids and few-shot curves it shows. Built by
`featstore.report.build`; rendered by `featstore.report.markdown` and `featstore.report.html`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

METHOD_EXTRACT = "extract"
METHOD_HEAD = "frozen features + head"
METHOD_EVALUATE = "evaluate"
METHOD_SWEEP = "sweep"
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
    sweeps' whole grids (`sweeps`, `SweepTable`) and the few-shot curves
    (`fewshots`, `FewShotCurves`), in log order; `dataset` the one dataset
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


@dataclass
class SweepTable:
    """A sweep's whole grid: one row per setting (best first; keys as `heads.sweep.COLUMNS`)."""

    run_id: str
    dataset: str
    feature_sets: list[str]
    n_settings: int | None
    rows: list[dict] = field(default_factory=list)
    time: str | None = None

    def to_dict(self) -> dict:
        """Return a JSON-ready dict."""
        return dict(self.__dict__)


@dataclass
class FewShotCurves:
    """A few-shot run's curves: one dict per head, features and shots (mean, std, n, ...)."""

    run_id: str
    dataset: str
    mode: str | None
    shots: list[int]
    repeats: int | None
    seeds: list[int]
    curves: list[dict]
    time: str | None = None

    def to_dict(self) -> dict:
        """Return a JSON-ready dict."""
        return dict(self.__dict__)


def by_dataset(report: Report) -> dict[str, list[ReportRow]]:
    """The rows of `report` per dataset, in report order."""
    groups: dict[str, list[ReportRow]] = {}
    for row in report.rows:
        groups.setdefault(row.dataset, []).append(row)
    return groups


def is_trained(row: ReportRow) -> bool:
    """Whether `row` trained something (a head, a sweep, a fine-tune run): the plots' points."""
    return row.method in (METHOD_HEAD, METHOD_SWEEP, *FINETUNE_METHODS)
