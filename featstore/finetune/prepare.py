"""What `featstore finetune` checks before any long work, without TensorFlow: the options, the
dataset, the starting network, the split, the run id; the result is a `RunPlan`."""

from __future__ import annotations

import re
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from featstore.backbones.options import BackboneOptions
from featstore.backbones.recipes import BackboneRecipe, resolve_recipe, source_of
from featstore.data.options import SplitOptions
from featstore.data.scan import Dataset, check_name, scan_dataset
from featstore.data.splits import Split, make_split, resolve_source
from featstore.errors import DatasetError, InvalidOptionError, StoreError
from featstore.finetune.networks import SCRATCH_INPUT_PX, SCRATCH_NETWORKS, scratch_min_px
from featstore.finetune.options import FinetuneConfig, FinetuneOptions, NetworkOptions
from featstore.reporter import SILENT, Reporter
from featstore.store import run_files
from featstore.store.layout import StoreLayout

METHOD_FINETUNE = "fine-tune"
METHOD_SCRATCH = "scratch"


@dataclass(frozen=True)
class Start:
    """Where a run's network starts: a backbone recipe, a scratch network, or an earlier run
    (`parent`); `label` names it in feature sets and the report."""

    kind: str
    method: str
    label: str
    input_size: int
    recipe: BackboneRecipe | None = None
    parent: str | None = None


@dataclass(frozen=True)
class RunPlan:
    """A checked run, ready to train: `layout`, `run_id`, `folder`, `config`, `dataset`, where its
    network starts, and whether it resumes."""

    layout: StoreLayout
    run_id: str
    folder: Path
    config: FinetuneConfig
    dataset: Dataset
    start: Start
    resuming: bool

    @property
    def options(self) -> FinetuneOptions:
        """The run's options (`config.options`)."""
        return self.config.options


def _scratch_start(backbone: str, network: NetworkOptions) -> Start:
    if network.weights not in (None, "none"):
        raise InvalidOptionError(
            "weights", f"{backbone} has no pretrained weights; it always trains from scratch"
        )
    size = int(network.input_size or SCRATCH_INPUT_PX[backbone])
    least = scratch_min_px(backbone, network.depth)
    if size < least:
        depth = f" with depth {network.depth}" if backbone == "simple-cnn" else ""
        raise InvalidOptionError(
            "input_size", f"{backbone} needs an input of at least {least} px{depth}, not {size}"
        )
    suffix = f"-d{network.depth}" if backbone == "simple-cnn" and network.depth != 3 else ""
    return Start("scratch", METHOD_SCRATCH, f"{backbone}{suffix}-{size}px", size)


def _run_start(backbone: str, run_id: str, network: NetworkOptions, layout: StoreLayout) -> Start:
    if network.weights not in (None, "imagenet"):
        raise InvalidOptionError("weights", f"{backbone} starts from that run's weights; drop it")
    _, meta = run_files.run_file(layout, run_id, run_files.CHECKPOINT_FILE)
    size = int(meta["input_size"])
    if network.input_size and int(network.input_size) != size:
        raise InvalidOptionError(
            "input_size", f"{backbone} takes {size} px images (its network was trained so); drop it"
        )
    return Start("finetune", METHOD_FINETUNE, run_files.run_label(run_id), size, None, run_id)


def resolve_start(
    backbone: str, network: NetworkOptions, layout: StoreLayout, reporter: Reporter = SILENT
) -> Start:
    """Check the backbone options and say how the network starts; no TensorFlow (ImageNet weights
    are fetched on first use). InvalidOptionError for weights or a size the network cannot
    take, or an untrainable source; UnknownBackboneError, WeightsError, StoreError as
    `resolve_recipe`."""
    if backbone in SCRATCH_NETWORKS:
        return _scratch_start(backbone, network)
    run_id = run_files.parse_ref(backbone)
    if run_id is not None:
        return _run_start(backbone, run_id, network, layout)
    opts = BackboneOptions(backbone, weights=network.weights or "imagenet", input_size=network.input_size)
    recipe = resolve_recipe(opts, layout=layout, reporter=reporter)
    source = source_of(recipe)
    if source.keras_model is None:
        raise InvalidOptionError(
            "backbone",
            f"{backbone} is {source.title}, which TensorFlow cannot train; use a registry name, a .keras "
            f"file, {' or '.join(SCRATCH_NETWORKS)}, or finetune:<run-id>",
        )
    method = METHOD_SCRATCH if recipe.weights == "none" else METHOD_FINETUNE
    return Start(recipe.kind, method, recipe.label, recipe.input_size, recipe)


def new_run_id(dataset: str, label: str) -> str:
    """Return a fresh run id such as `flowers-mobilenet_v2-160px-20261122-193000-ab12`."""
    safe = re.sub(r"[^A-Za-z0-9._+-]+", "_", f"{dataset}-{label}")[:80]
    return f"{safe}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"


def check_dataset(ds: Dataset) -> None:
    """Raise DatasetError unless `ds` has labelled images of at least two classes, none empty."""
    if ds.layout in ("flat", "list") or not ds.class_names:
        raise DatasetError(
            f"{ds.root} has no classes: finetune needs labelled images (a folder of class folders, "
            "train/val/test folders, or a CSV manifest path,label[,split])"
        )
    if ds.empty_classes:
        raise DatasetError(
            f"class {ds.empty_classes[0]!r} of {ds.root} has no images; add images to it or remove its folder"
        )
    if len(ds.class_names) < 2:
        raise DatasetError(f"{ds.root} has one class ({ds.class_names[0]!r}); a classifier needs at least 2")


def make_run_split(
    labels: Sequence[int],
    stored: Sequence[str],
    class_names: list[str],
    split: SplitOptions,
    where: str,
    digests: Sequence[str] | None = None,
) -> Split | None:
    """The split of `fit-head`, checked to have a validation part (InvalidOptionError otherwise;
    DatasetError when the images cannot make it); None without `digests` for a hash split."""
    labels = np.asarray(labels)
    if digests is None:
        labelled = [s for s, y in zip(stored, labels, strict=True) if y >= 0]
        if resolve_source(split.split, labelled) == "hash":
            return None
    made = make_split(labels, stored, class_names, split, digests)
    if not len(made.val):
        raise InvalidOptionError(
            "val_size",
            f"{where}: the validation split is empty; fine-tuning keeps the epoch with the lowest "
            "validation loss, so set it above 0"
            + (" (or add a val/ folder)" if made.source == "stored" and not made.note else ""),
        )
    return made


def check_disk_space(folder: Path, need_bytes: int, what: str) -> None:
    """Raise StoreError when the file system of `folder` has less than `need_bytes` free."""
    probe = folder
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if need_bytes > free:
        raise StoreError(
            f"not enough disk space in {probe} for {what}: needs about {need_bytes / 1e6:,.0f} MB, "
            f"{free / 1e6:,.0f} MB free; free some space or pass --store on another disk"
        )


def exists_message(run_id: str) -> str:
    """The one line a run name that is taken gets."""
    return f"fine-tune run {run_id} exists already; choose another --name, or --resume {run_id}"


def _resumed_config(layout: StoreLayout, resume: str, data, backbone, session: FinetuneOptions):
    given = [p for p, v in (("backbone", backbone), ("data", data)) if v is not None]
    if given:
        raise InvalidOptionError(given[0], f"resuming run {resume} continues with its own options; drop it")
    meta = run_files.read_run_meta(layout, resume)
    if meta.get("status") == "done":
        raise StoreError(f"fine-tune run {resume} is finished already; start a new run")
    return FinetuneConfig.from_dict(meta["config"], session)


def plan_run(
    layout: StoreLayout,
    data: str | None,
    backbone: str | None,
    options: FinetuneOptions,
    *,
    name: str | None = None,
    resume: str | None = None,
    reporter: Reporter = SILENT,
) -> RunPlan:
    """Check everything a run can be refused for before training, and plan it: a new run from
    `data`, `backbone` and `options`, or run `resume` from its stored config (with the
    device and decode threads of `options`). Raises for bad options or data, an unknown
    backbone or run, or a taken name."""
    given_id = check_name(name, "run id") if name and resume is None else None
    if resume is not None:
        config = _resumed_config(layout, resume, data, backbone, options)
    elif data is None or backbone is None:
        missing = "backbone" if backbone is None else "data"
        raise InvalidOptionError(missing, "missing: a new run needs a backbone and data (or resume a run)")
    else:
        config = FinetuneConfig(backbone, str(Path(data).expanduser().absolute()), "", options)
    dataset = scan_dataset(config.data)
    config = replace(config, dataset=dataset.name)
    check_dataset(dataset)
    start = resolve_start(config.backbone, config.options.network, layout, reporter)
    decode = config.options.decode.for_backbone(start.recipe.resize if start.recipe else None)
    config = replace(config, options=replace(config.options, decode=decode))
    items = dataset.items
    split = config.options.split
    make_run_split(
        [it.label for it in items], [it.split for it in items], dataset.class_names, split, str(dataset.root)
    )
    run_id = resume or given_id or new_run_id(dataset.name, start.label)
    folder = run_files.run_dir(layout, run_id)
    if resume is None and folder.exists():
        raise StoreError(exists_message(run_id))
    return RunPlan(layout, run_id, folder, config, dataset, start, resume is not None)
