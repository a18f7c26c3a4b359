"""What the head commands return: `FitResult`, `EvalResult`, `SweepResult` and `FewShotResult`,
plain JSON-ready records, and the columns of a sweep's table and of few-shot curves."""

from __future__ import annotations

from dataclasses import dataclass, field

from featstore.emissions import Emissions
from featstore.options import Record


@dataclass
class FitResult(Record):
    """One fitted head: where it is and how it scored (metrics per part: train, val, test)."""

    head_id: str
    kind: str
    feature_sets: list[str]
    path: str
    config: dict
    split: dict
    metrics: dict
    fit_seconds: float
    predict_images_per_s: float | None
    n_train: int
    n_augmented_train: int
    emissions: Emissions = field(default_factory=Emissions)
    cv: dict | None = None

    def summary(self) -> dict:
        """One row of a comparison table (cv_accuracy and cv_std when scored by cross-validation;
        test_ece: the expected calibration error on test)."""
        train, val, test = (self.metrics.get(p, {}) for p in ("train", "val", "test"))
        cv = self.cv or {}
        return {
            "kind": self.kind,
            "head_id": self.head_id,
            "train_accuracy": train.get("accuracy"),
            "val_accuracy": val.get("accuracy"),
            "cv_accuracy": cv.get("accuracy"),
            "cv_std": cv.get("std"),
            "test_accuracy": test.get("accuracy"),
            "test_macro_f1": test.get("macro_f1"),
            "test_ece": test.get("ece"),
            "fit_seconds": self.fit_seconds,
            "energy_kwh": self.emissions.energy_kwh,
            "co2_kg": self.emissions.co2_kg,
        }


@dataclass
class EvalResult(Record):
    """A head scored on a feature set; `run_id` is its line in the run log."""

    head_id: str
    feature_sets: list[str]
    metrics: dict
    n_rows: int
    n_skipped: int
    path: str
    run_id: str = ""
    seconds: float = 0.0


#: The columns of a sweep's table, in order (the keys of each row).
SWEEP_COLUMNS = (
    "rank kind setting features val_accuracy val_macro_f1 cv_accuracy cv_std test_accuracy test_macro_f1 "
    "fit_seconds chosen head_id error"
).split()


@dataclass
class SweepResult(Record):
    """A finished sweep: every setting's row (best first), the heads it saved, where the table is."""

    run_id: str
    feature_sets: list[str]
    n_settings: int
    rows: list[dict]
    heads: list[FitResult]
    best_head_id: str | None
    path: str
    seconds: float | None = None
    emissions: Emissions = field(default_factory=Emissions)
    notes: list[str] = field(default_factory=list)


#: The columns of a few-shot table, in order.
SHOT_COLUMNS = ["head", "features", "shots", "mean", "std", "n", "min", "max"]


@dataclass
class FewShotResult(Record):
    """Few-shot curves: one row per head, features and shots (`mean`, `std`, `n`, `min`, `max`
    of the test accuracy over the repeats, and each draw's accuracy in `accuracies`)."""

    run_id: str
    mode: str
    feature_sets: list[str]
    shots: list[int]
    repeats: int
    seeds: list[int]
    curves: list[dict]
    path: str
    seconds: float | None = None
    emissions: Emissions = field(default_factory=Emissions)
    notes: list[str] = field(default_factory=list)

    def rows(self) -> list[dict]:
        """The table's rows (`COLUMNS`), without the per-draw lists."""
        return [{k: c.get(k) for k in SHOT_COLUMNS} for c in self.curves]
