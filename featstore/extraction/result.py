"""What one `extract` run did (`ExtractResult`), and the run record it leaves in the run log."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from featstore.data.scan import Skipped
from featstore.emissions import Emissions
from featstore.store.runlog import ExtractRecord

#: The row counts an extract run records under `counts` in the run log.
COUNTS = ("n_images", "n_views", "n_computed", "n_reused", "n_resumed", "n_removed", "n_skipped")


@dataclass
class ExtractResult:
    """What one `extract` run did: `n_images` plain rows, `n_views` augmented rows, and rows
    computed, reused, resumed, removed; `skipped` files and why; `seconds` wall time,
    `images_per_s` rows per second of the loop; `runtime` (None when nothing was computed)."""

    feature_set: str
    path: str
    dataset: str
    layout: str
    backbone: str
    backbone_digest: str
    weights: str
    input_size: int
    n_features: int
    dtype: str
    device: str | None
    n_images: int
    n_views: int
    n_computed: int
    n_reused: int
    n_resumed: int
    n_removed: int
    n_skipped: int
    written: bool
    seconds: float
    images_per_s: float | None
    class_names: list[str]
    run_id: str
    skipped: list[Skipped] = field(default_factory=list)
    empty_classes: list[str] = field(default_factory=list)
    augment: dict | None = None
    emissions: Emissions = field(default_factory=Emissions)
    precision: str = "fp32"
    decoder: str = "pillow"
    batch_size: int | None = None
    precision_check: dict | None = None
    calibration: dict | None = None
    warnings: list[str] = field(default_factory=list)
    profile: dict | None = None
    runtime: str | None = None

    def to_dict(self) -> dict:
        """Return a JSON-ready dict."""
        d = asdict(self)
        d["skipped"] = [s.to_dict() for s in self.skipped]
        return d

    def to_record(self, data: str, engine: str, recipe: dict) -> ExtractRecord:
        """The run log's record of this run (the job wrapper adds seconds, energy and CO2)."""
        same = ("dataset", "backbone", "backbone_digest", "precision", "feature_set", "device", "batch_size")
        return ExtractRecord(
            id=self.run_id, command="extract", data=data, engine=engine, recipe=recipe,
            counts={k: getattr(self, k) for k in COUNTS}, augment=self.augment, images_per_s=self.images_per_s,
            **{k: getattr(self, k) for k in same},
        )  # fmt: skip
