"""What an inspection returns and leaves in the store: an `Inspection`, written as
`store/inspections/<run-id>.json`, and its run record."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from featstore.files import json_default, write_atomic
from featstore.options import Record
from featstore.store.layout import StoreLayout
from featstore.store.runlog import RunRecord

#: The folder of inspection results under the store root.
INSPECTIONS = "inspections"
#: The checks `featstore inspect` runs, in the order the report shows them.
CHECKS = ("duplicates", "leaks", "labels", "map")

Log = Callable[[str], None]


def inspections_dir(layout: StoreLayout) -> Path:
    """The folder holding inspection results: `<store>/inspections`."""
    return layout.root / INSPECTIONS


@dataclass
class Inspection(Record):
    """The result of one `featstore inspect` run: `check` (duplicates, leaks, labels, map), its
    `summary`, `items` (findings, best first, with the keys of `columns`), `groups` (clusters),
    `notes`, the JSON `path` in the store, the map's `picture`, the `output` copy, `seconds`."""

    check: str
    run_id: str
    feature_sets: list[str]
    dataset: str
    options: dict
    summary: dict
    columns: list[str]
    items: list[dict]
    groups: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    path: str | None = None
    picture: str | None = None
    output: str | None = None
    seconds: float | None = None
    emissions: dict | None = None

    def limited(self, limit: int | None = None) -> list[dict]:
        """The first `limit` items (all when None or 0)."""
        return list(self.items[:limit] if limit else self.items)

    def rows(self, limit: int | None = None) -> list[dict]:
        """The first `limit` items as table rows (the keys of `columns`)."""
        return [{c: item.get(c) for c in self.columns} for item in self.limited(limit)]

    @classmethod
    def from_dict(cls, data: dict) -> Inspection:
        """Rebuild from `to_dict` output (a result file); unknown keys are ignored."""
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in names})


def write_inspection(layout: StoreLayout, inspection: Inspection, picture: bytes | None = None) -> Path:
    """Write `inspection` (and its PNG `picture`) into the store's inspections folder, atomically;
    set its `path` and `picture` and return the JSON file."""
    folder = inspections_dir(layout)
    folder.mkdir(parents=True, exist_ok=True)
    if picture is not None:
        png = folder / f"{inspection.run_id}.png"
        write_atomic(png, picture)
        inspection.picture = str(png)
    path = folder / f"{inspection.run_id}.json"
    inspection.path = str(path)
    text = json.dumps(inspection.to_dict(), default=json_default, ensure_ascii=False, indent=1)
    write_atomic(path, text.encode())
    return path


def read_inspection(path: str | Path) -> Inspection:
    """Read a result file written by `write_inspection` (OSError, ValueError or TypeError when it
    is missing or not one)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or "check" not in data:
        raise ValueError(f"{path} is not an inspection result")
    return Inspection.from_dict(data)


def inspect_record(inspection: Inspection, backbone_digests: list[str | None], counts: dict) -> RunRecord:
    """The run record of an inspection: command `inspect`, dataset, counts, and extra keys `check`,
    `feature_sets`, `backbone_digests`, `options`, `result`, `picture`."""
    return RunRecord(
        id=inspection.run_id,
        command="inspect",
        dataset=inspection.dataset,
        counts=counts,
        extra={
            "check": inspection.check,
            "feature_sets": inspection.feature_sets,
            "backbone_digests": backbone_digests,
            "options": inspection.options,
            "result": f"{INSPECTIONS}/{inspection.run_id}.json",
            "picture": f"{INSPECTIONS}/{inspection.run_id}.png" if inspection.picture else None,
        },
    )


class Timer:
    """Seconds since creation, rounded (for `Inspection.seconds`)."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def seconds(self) -> float:
        """Wall seconds since this timer started."""
        return round(time.perf_counter() - self.t0, 3)
