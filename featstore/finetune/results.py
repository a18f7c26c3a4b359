"""What a finished fine-tune session leaves: the report files, `meta.json` (status done), the run
log's `FinetuneRecord` and the caller's `FinetuneResult`."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields

from featstore.cards import finetune_card
from featstore.data.scan import Skipped
from featstore.data.splits import Split
from featstore.deps import package_versions
from featstore.emissions import Emissions
from featstore.files import write_atomic
from featstore.finetune import training
from featstore.finetune.evaluation import Outputs
from featstore.finetune.prepare import RunPlan
from featstore.finetune.training import TrainState
from featstore.store import run_files
from featstore.store.runlog import FinetuneRecord

PIXELS_FILE = "pixels.npy"
METRICS_FILE = "metrics.json"
CARD_FILE = "card.md"


@dataclass
class FinetuneResult:
    """What one `finetune` run did and where its files are."""

    run_id: str
    path: str
    method: str
    backbone: str
    dataset: str
    class_names: list[str]
    input_size: int
    epochs_run: int
    best_epoch: int | None
    stopped_early: bool
    resumed_from_epoch: int | None
    metrics: dict
    params_total: int
    params_trainable: int
    gflops_per_image: float
    n_features: int
    export_errors: dict
    seconds: float
    train_images_per_s: float | None
    images_per_s: float | None
    device: str
    mixed_precision: bool
    n_images: int
    split: dict
    skipped: list[Skipped] = field(default_factory=list)
    emissions: Emissions = field(default_factory=Emissions)

    def to_dict(self) -> dict:
        """Return a JSON-ready dict."""
        d = asdict(self)
        d["skipped"] = [s.to_dict() for s in self.skipped]
        return d


@dataclass
class Outcome:
    """A finished session: the plan, `meta`, training state, outputs, split, images read and
    skipped, the epoch it resumed after, the run's seconds in all sessions and images/s."""

    plan: RunPlan
    meta: dict
    state: TrainState
    outputs: Outputs
    split: Split
    n_images: int
    skipped: list[Skipped]
    resumed_from: int | None
    seconds: float
    train_images_per_s: float | None

    @property
    def head(self) -> str:
        """The head's name in the report: `dense-<units>`, or `dense` without a hidden layer."""
        units = self.plan.options.network.head_units_for(self.plan.config.backbone)
        return f"dense-{units}" if units else "dense"


def session_seconds(state: TrainState, resumed_from: int | None, wall_s: float) -> float:
    """A run's seconds in all sessions: every epoch's training seconds plus this session's time
    outside training (`wall_s` its wall time)."""
    this_train = sum(state.history.get("seconds", [])[(resumed_from or 0) :])
    return round(state.train_seconds + max(wall_s - this_train, 0.0), 3)


def _done_fields(o: Outcome) -> dict:
    out, state = o.outputs, o.state
    measured = "metrics export_errors params_total params_trainable gflops_per_image images_per_s".split()
    return dict(
        status="done",
        head=o.head,
        split=o.split.describe(),
        **{k: getattr(out, k) for k in measured},
        phases=state.phases,
        epochs_run=state.epochs_done,
        best_epoch=state.best_epoch,
        stopped_early=state.stopped_early,
        seconds=o.seconds,
        train_seconds=round(state.train_seconds, 3),
        train_images_per_s=o.train_images_per_s,
        n_images=o.n_images,
        n_skipped=len(o.skipped),
        skipped=[s.to_dict() for s in o.skipped],
        sessions=state.sessions,
        emissions=None,  # measured by the job until it ends: see `finish`
        versions=package_versions(),
        finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )


def write_done(o: Outcome) -> None:
    """Write the report files and meta.json with status done, then drop the checkpoints and the
    decoded pixels: the run is usable from here on."""
    folder = o.plan.folder
    o.meta.update(_done_fields(o))
    o.meta.pop("pid", None)
    for name, data in o.outputs.pictures.items():
        write_atomic(folder / name, data)
    write_atomic(folder / METRICS_FILE, json.dumps(o.outputs.metrics, indent=2).encode())
    write_atomic(folder / training.HISTORY_FILE, json.dumps(o.state.history).encode())
    write_atomic(folder / CARD_FILE, finetune_card(o.meta).encode())
    o.meta["files_sha256"] = o.outputs.files
    run_files.write_run_meta(folder, o.meta)
    training.remove_checkpoints(folder)
    (folder / PIXELS_FILE).unlink(missing_ok=True)


def run_record(o: Outcome) -> FinetuneRecord:
    """The run log's record of the run (the job adds id, energy, CO2 and emissions)."""
    plan, out, split = o.plan, o.outputs, o.split
    return FinetuneRecord(
        id=plan.run_id,
        command="finetune",
        method=plan.start.method,
        dataset=plan.dataset.name,
        data=str(plan.dataset.root),
        backbone=plan.start.label,
        head=o.head,
        epochs=o.state.epochs_done,
        metrics={p: {k: m[k] for k in ("accuracy", "macro_f1")} for p, m in out.metrics.items()},
        params_total=out.params_total,
        params_trainable=out.params_trainable,
        gflops_per_image=out.gflops_per_image,
        history=o.state.history,
        folder=str(plan.folder),
        split=split.describe(),
        counts={"n_images": o.n_images, "n_skipped": len(o.skipped)}
        | {f"n_{p}": len(getattr(split, p)) for p in ("train", "val", "test")},
        seconds=o.seconds,
        images_per_s=out.images_per_s,
        train_images_per_s=o.train_images_per_s,
    )


def finish(o: Outcome, emissions: Emissions) -> FinetuneResult:
    """Put the job's energy into meta.json and the model card (an interrupted earlier session was
    not measured: a note says so) and return the result."""
    if o.state.sessions > 1:
        emissions.note = (
            emissions.note + "; " if emissions.note else ""
        ) + "earlier interrupted sessions not measured"
    o.meta["emissions"] = emissions.to_dict()
    write_atomic(o.plan.folder / CARD_FILE, finetune_card(o.meta).encode())
    run_files.write_run_meta(o.plan.folder, o.meta)
    m, special = o.meta, ("path", "backbone", "class_names", "resumed_from_epoch", "skipped", "emissions")
    same = {f.name: m[f.name] for f in fields(FinetuneResult) if f.name not in special}
    return FinetuneResult(
        path=str(o.plan.folder), backbone=m["backbone_label"], class_names=m["classes"],
        resumed_from_epoch=o.resumed_from, skipped=o.skipped, emissions=emissions, **same,
    )  # fmt: skip
