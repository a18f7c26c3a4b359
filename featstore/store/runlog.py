"""The run log `store/runs.jsonl`: one JSON line per run, written in one call under an flock,
read back as the typed record of its command (unknown keys kept in `extra`)."""

from __future__ import annotations

import fcntl
import json
import os
import time
import uuid
from dataclasses import asdict, dataclass, field, fields

from featstore.files import json_default
from featstore.store.layout import StoreLayout


def new_run_id(command: str) -> str:
    """Return a fresh id such as `extract-20261122-181500-3f2a`."""
    return f"{command}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"


@dataclass
class RunRecord:
    """What every run records: id, command, when, seconds, energy (kWh), CO2 (kg); `counts` the
    command's `n_*` figures, `emissions` codecarbon's details, `extra` undeclared keys."""

    id: str
    command: str
    time: str | None = None
    featstore_version: str | None = None
    dataset: str | None = None
    seconds: float | None = None
    images_per_s: float | None = None
    energy_kwh: float | None = None
    co2_kg: float | None = None
    emissions: dict | None = None
    counts: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        """Return the JSON line's object (`extra` merged back in)."""
        data = {k: v for k, v in asdict(self).items() if k != "extra"}
        return {**self.extra, **data}

    @classmethod
    def from_dict(cls, data: dict) -> RunRecord:
        """Read one logged line as the record class of its command; ValueError without `id` or
        `command`."""
        if not isinstance(data, dict) or "id" not in data or "command" not in data:
            raise ValueError("a run record needs an id and a command")
        kind = RECORD_KINDS.get(data["command"], RunRecord) if cls is RunRecord else cls
        names = {f.name for f in fields(kind)} - {"extra"}
        known = {k: v for k, v in data.items() if k in names}
        return kind(**known, extra={k: v for k, v in data.items() if k not in names})

    def emissions_estimated(self) -> bool | None:
        """Whether codecarbon estimated rather than measured the energy (None when unknown)."""
        return (self.emissions or {}).get("estimated")


@dataclass
class ExtractRecord(RunRecord):
    """An `extract` run: the feature set it wrote, from which data, backbone (its label and
    recipe) and precision."""

    data: str | None = None
    backbone: str | None = None
    backbone_digest: str | None = None
    precision: str | None = None
    feature_set: str | None = None
    device: str | None = None
    engine: str | None = None
    batch_size: int | None = None
    augment: dict | None = None
    recipe: dict | None = None

    def computed(self) -> bool:
        """True when the run computed or removed rows (a re-run that reused every row did not)."""
        counts = self.counts or {}
        return bool(counts.get("n_computed") or counts.get("n_removed"))


@dataclass
class FitRecord(RunRecord):
    """A `fit-head` run: the head, its kind, the feature sets and backbones, metrics per part
    (`{"train"|"val"|"test": {"accuracy", "macro_f1"}}`) and the split description."""

    head_id: str | None = None
    kind: str | None = None
    feature_sets: list[str] = field(default_factory=list)
    backbone_digests: list[str] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    split: dict | None = None


@dataclass
class EvaluateRecord(FitRecord):
    """An `evaluate` run: a saved head scored on `feature_sets` (metrics flat: accuracy,
    balanced_accuracy, macro_f1, log_loss, n), the head's own sets and the result file."""

    head_feature_sets: list[str] | None = None
    path: str | None = None


@dataclass
class FinetuneRecord(RunRecord):
    """A `finetune` run: method (fine-tune or scratch), backbone label, head, epochs, metrics per
    part, parameters, GFLOPs per image, the learning curves, its folder and split."""

    method: str | None = None
    data: str | None = None
    backbone: str | None = None
    head: str | None = None
    epochs: int | None = None
    metrics: dict = field(default_factory=dict)
    params_total: int | None = None
    params_trainable: int | None = None
    gflops_per_image: float | None = None
    history: dict | None = None
    folder: str | None = None
    split: dict | None = None
    feature_sets: list[str] = field(default_factory=list)
    train_images_per_s: float | None = None


@dataclass
class ScoreRecord(RunRecord):
    """A `score` run: the model scored, its kind, input, output file, engine and device, and the
    rejection threshold of its `unknown` rows (value, and how it was chosen) if any."""

    model: str | None = None
    kind: str | None = None
    input: str | None = None
    output: str | None = None
    engine: str | None = None
    device: str | None = None
    backbone_digests: list[str] = field(default_factory=list)
    threshold: dict | None = None


@dataclass
class SweepRecord(RunRecord):
    """A `fit-head sweep` run: the feature sets swept, settings, class weights, split, the heads
    saved (head_id, kind, setting, features, chosen, val and test accuracy, test macro F1, fit
    seconds) and the file of the ranked grid (`results`)."""

    feature_sets: list[str] = field(default_factory=list)
    n_settings: int | None = None
    class_weight: str | None = None
    split: dict | None = None
    heads: list[dict] = field(default_factory=list)
    best_head_id: str | None = None
    results: str | None = None


@dataclass
class FewShotRecord(RunRecord):
    """A few-shot run: `mode` (a kind, `all` or `sweep`), shots, repeats, each draw's seed, the
    curves (head, features, shots, mean, std, n, accuracies) and the draws' file (`results`)."""

    feature_sets: list[str] = field(default_factory=list)
    mode: str | None = None
    shots: list[int] = field(default_factory=list)
    repeats: int | None = None
    seeds: list[int] = field(default_factory=list)
    curves: list[dict] = field(default_factory=list)
    split: dict | None = None
    results: str | None = None


RECORD_KINDS: dict[str, type[RunRecord]] = {
    "extract": ExtractRecord,
    "fit-head": FitRecord,
    "evaluate": EvaluateRecord,
    "finetune": FinetuneRecord,
    "score": ScoreRecord,
    "sweep": SweepRecord,
    "few-shot": FewShotRecord,
}


def record_run(layout: StoreLayout, record: RunRecord | dict) -> dict:
    """Append `record` (with time and featstore version added) to the run log; return the line's
    object."""
    from featstore import __version__

    data = record.to_dict() if isinstance(record, RunRecord) else dict(record)
    stamp = {"time": data.pop("time", None) or time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    stamp["featstore_version"] = data.pop("featstore_version", None) or __version__
    full = {**stamp, **data}
    line = (json.dumps(full, default=json_default, ensure_ascii=False) + "\n").encode()
    layout.root.mkdir(parents=True, exist_ok=True)
    fd = os.open(layout.runs, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, line)
    finally:
        os.close(fd)
    return full


def read_runs(layout: StoreLayout) -> tuple[list[dict], int]:
    """Return the logged runs as dicts and how many lines could not be read."""
    if not layout.runs.is_file():
        return [], 0
    runs, bad = [], 0
    for raw in layout.runs.read_bytes().splitlines():
        if not raw.strip():
            continue
        try:
            runs.append(json.loads(raw))
        except ValueError:
            bad += 1
    return runs, bad


def read_records(layout: StoreLayout) -> tuple[list[RunRecord], list[str]]:
    """Return the logged runs as typed records, and a note per line that is not a run."""
    runs, bad = read_runs(layout)
    notes = [f"{layout.runs}: {bad} line(s) could not be read (a run killed while writing?)"] if bad else []
    records = []
    for i, run in enumerate(runs):
        try:
            records.append(RunRecord.from_dict(run))
        except (ValueError, TypeError):
            notes.append(f"{layout.runs}: record {i + 1} is not a run (no id or command)")
    return records, notes
