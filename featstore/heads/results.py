"""What `fit_head` and `evaluate` return: `FitResult` and `EvalResult`, plain JSON-ready records.

Imports `emissions` only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from featstore.emissions import Emissions


@dataclass
class FitResult:
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

    def to_dict(self) -> dict:
        """Return a JSON-ready dict."""
        return asdict(self)

    def summary(self) -> dict:
        """One row of a comparison table."""
        train, val, test = (self.metrics.get(p, {}) for p in ("train", "val", "test"))
        return {
            "kind": self.kind,
            "head_id": self.head_id,
            "train_accuracy": train.get("accuracy"),
            "val_accuracy": val.get("accuracy"),
            "test_accuracy": test.get("accuracy"),
            "test_macro_f1": test.get("macro_f1"),
            "fit_seconds": self.fit_seconds,
            "energy_kwh": self.emissions.energy_kwh,
            "co2_kg": self.emissions.co2_kg,
        }


@dataclass
class EvalResult:
    """A head scored on a feature set; `run_id` is its line in the run log."""

    head_id: str
    feature_sets: list[str]
    metrics: dict
    n_rows: int
    n_skipped: int
    path: str
    run_id: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict:
        """Return a JSON-ready dict."""
        return asdict(self)
