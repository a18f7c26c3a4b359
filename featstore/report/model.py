"""The comparison report's data: one `ReportRow` per recorded run, grouped by dataset, with the
sweeps' grids and few-shot curves."""

from __future__ import annotations

from dataclasses import dataclass, field

from featstore.options import Record

METHOD_EXTRACT = "extract"
METHOD_HEAD = "frozen features + head"
METHOD_EVALUATE = "evaluate"
METHOD_SWEEP = "sweep"
FINETUNE_METHODS = ("fine-tune", "scratch")


@dataclass(kw_only=True)
class ReportRow(Record):
    """One recorded run: accuracies 0..1, costs in s, kWh and kg CO2; built by keyword, the field
    order is that of the `--json` keys and `--csv` columns.

    The `total_` costs add, for a head, the extract runs of its feature sets (`depends_on`).
    `params_total` counts backbone + head, `params_trainable` what the run trained (None for
    svm and knn). An `evaluate` row is a saved head scored on another feature set, under that
    set's dataset. `split_note` says how stored parts were re-mapped, if they were. `cv_accuracy`
    and `cv_std` are a head's cross-validated accuracy (chosen by `--select cv`), `test_ece` its
    expected calibration error on test.
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
    cv_accuracy: float | None = None
    cv_std: float | None = None
    test_ece: float | None = None
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


@dataclass
class Report:
    """Rows grouped by dataset (best test accuracy first), what was left out and why, the sweeps'
    grids and the few-shot curves; `dataset` the one dataset kept, None for all."""

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
