"""`featstore finetune`: end-to-end training in TensorFlow, and the from-scratch baselines.

Owns one run from options to `store/finetune/<run-id>/` (see `featstore.store.run_files` for the
folder contract): checking the input before any long work, decoding every image once with
featstore's own decoder (`featstore.data.images.load_images`, the same resize policy as `extract`)
into a pixel cache, the split (`featstore.data.splits.make_split`, the same as `fit-head`), the
training (`featstore.finetune.training`), and the outputs: `best.keras`, `classifier.onnx` and
`backbone.onnx` (both checked against Keras), history, learning curves, metrics, confusion
matrices, a model card, and a line in the run log. The networks live in `featstore.finetune.networks`.
TensorFlow is imported only once the input has been checked.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from featstore.backbones.registry import BackboneRecipe, finetune_label, resolve_recipe, sha256_file
from featstore.data.images import Dataset, Skipped, check_name, check_resize, load_images, scan_dataset
from featstore.data.splits import Split, check_split, make_split, resolve_source
from featstore.deps import require
from featstore.emissions import Emissions, track_emissions
from featstore.errors import DatasetError, DeviceError, StoreError, StoreLockedError, UnknownBackboneError
from featstore.files import write_atomic
from featstore.finetune.networks import SCRATCH_INPUT_PX, SCRATCH_NETWORKS, Unfreeze, parse_augment_ops
from featstore.finetune.training import StageProgress, TrainData, TrainState
from featstore.store import run_files as runstore
from featstore.store.layout import StoreLayout, resolve_store
from featstore.store.runlog import record_run

METHOD_FINETUNE = "fine-tune"
METHOD_SCRATCH = "scratch"
PIXELS_FILE = "pixels.npy"
SPLIT_FILE = "split.json"
TF_DEVICES = ("auto", "cpu", "cuda")
#: Top backbone layers trained in the fine-tune phase when --unfreeze is not given.
DEFAULT_UNFREEZE = 30
#: Images checked through Keras and ONNX Runtime when a run's networks are exported.
N_CHECK_IMAGES = 8


@dataclass
class FinetuneConfig:
    """The options of one run, as given (`head_units` None: 128 for simple-cnn, else 0)."""

    backbone: str
    data: str
    dataset: str
    weights: str | None = None
    input_size: int | None = None
    resize: str = "squash"
    epochs: int = 10
    warmup_epochs: int = 2
    unfreeze: str | None = None
    lr: float = 1e-3
    fine_lr: float = 1e-4
    batch_size: int = 32
    augment: list[str] = field(default_factory=list)
    dropout: float = 0.2
    head_units: int | None = None
    label_smoothing: float = 0.0
    class_weights: bool = False
    patience: int = 5
    depth: int = 3
    test_size: float = 0.2
    val_size: float = 0.1
    seed: int = 0
    split: str = "auto"

    def to_dict(self) -> dict:
        """Return a JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FinetuneConfig:
        """Rebuild from `to_dict` output."""
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def check(self) -> FinetuneConfig:
        """Raise DatasetError for an option out of range; return self."""
        check_resize(self.resize)
        check_split(self.split)
        bad = [
            (self.epochs < 1, f"--epochs must be at least 1, not {self.epochs}"),
            (self.warmup_epochs < 0, f"--warmup-epochs must be 0 or more, not {self.warmup_epochs}"),
            (self.batch_size < 1, f"--batch-size must be at least 1, not {self.batch_size}"),
            (not 0 <= self.dropout < 1, f"--dropout must be in [0, 1), not {self.dropout}"),
            (
                not 0 <= self.label_smoothing < 1,
                f"--label-smoothing must be in [0, 1), not {self.label_smoothing}",
            ),
            (not (self.lr > 0 and self.fine_lr > 0), "--lr and --fine-lr must be positive"),
            (self.patience < 1, f"--patience must be at least 1, not {self.patience}"),
            (not 1 <= self.depth <= 8, f"--depth must be between 1 and 8, not {self.depth}"),
            (self.head_units is not None and self.head_units < 0, "--head-units must be 0 or more"),
            (self.input_size is not None and self.input_size < 1, "--input-size must be at least 1"),
        ]
        for is_bad, message in bad:
            if is_bad:
                raise DatasetError(message)
        self.augment = parse_augment_ops(",".join(self.augment))
        if self.unfreeze is not None:
            Unfreeze(self.unfreeze).count(10**9, self.backbone)  # the form only; the count once built
        return self


@dataclass(frozen=True)
class Start:
    """Where a run's network starts: a registry or .keras network (its recipe), a scratch
    network, or an earlier run (`parent`). `label` names it in feature sets and the report."""

    kind: str
    method: str
    label: str
    input_size: int
    recipe: BackboneRecipe | None = None
    parent: str | None = None


def resolve_start(config: FinetuneConfig, layout: StoreLayout, progress=None, log=None) -> Start:
    """Check the backbone options and say how the network starts; no TensorFlow. ImageNet
    weights are downloaded on first use (`progress` and `log` as in `resolve_recipe`).

    Raises
    ------
    UnknownBackboneError, WeightsError, StoreError
        Unknown name, weights that cannot be fetched, an input size the network cannot take,
        an ONNX file (not trainable), an unknown or unfinished parent run.
    """
    name, weights, size = config.backbone, config.weights, config.input_size
    if name in SCRATCH_NETWORKS:
        if weights not in (None, "none"):
            raise UnknownBackboneError(f"{name} has no pretrained weights; it always trains from scratch")
        from featstore.finetune.networks import scratch_min_px

        size = int(size or SCRATCH_INPUT_PX[name])
        if size < scratch_min_px(name, config.depth):
            raise UnknownBackboneError(
                f"{name} needs an input of at least {scratch_min_px(name, config.depth)} px"
                + (f" with --depth {config.depth}" if name == "simple-cnn" else "")
                + f", not {size}"
            )
        suffix = f"-d{config.depth}" if name == "simple-cnn" and config.depth != 3 else ""
        return Start("scratch", METHOD_SCRATCH, f"{name}{suffix}-{size}px", size)
    run_id = runstore.parse_ref(name)
    if run_id is not None:
        if weights not in (None, "imagenet"):
            raise UnknownBackboneError(f"{name} starts from that run's weights; drop --weights")
        _, meta = runstore.run_file(layout, run_id, runstore.CHECKPOINT_FILE)
        if size and int(size) != int(meta["input_size"]):
            raise UnknownBackboneError(
                f"{name} takes {meta['input_size']} px images (its network was trained so); drop --input-size"
            )
        return Start(
            "finetune", METHOD_FINETUNE, finetune_label(run_id), int(meta["input_size"]), None, run_id
        )
    recipe = resolve_recipe(
        name, weights=weights or "imagenet", input_size=size, layout=layout, progress=progress, log=log
    )
    if recipe.kind == "onnx":
        raise UnknownBackboneError(
            f"{name} is an ONNX file, which TensorFlow cannot train; use a registry name, a .keras "
            f"file, {' or '.join(SCRATCH_NETWORKS)}, or finetune:<run-id>"
        )
    method = METHOD_SCRATCH if recipe.weights == "none" else METHOD_FINETUNE
    return Start(recipe.kind, method, recipe.label, recipe.input_size, recipe)


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


def new_run_id(dataset: str, label: str) -> str:
    """Return a fresh run id such as `flowers-mobilenet_v2-160px-20261122-193000-ab12`."""
    safe = re.sub(r"[^A-Za-z0-9._+-]+", "_", f"{dataset}-{label}")[:80]
    return f"{safe}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"


def _check_dataset(ds: Dataset) -> None:
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


def _split(labels, stored, class_names, config: FinetuneConfig, where: str, digests=None) -> Split | None:
    """The split of `fit-head` (`config.split`, sizes and seed), checked to have a validation part.

    Without `digests` (before the images are read) a hash split cannot be made yet: only the
    choice is checked, and None returned.
    """
    labels = np.asarray(labels)
    if digests is None:
        labelled = [s for s, y in zip(stored, labels, strict=True) if y >= 0]
        if resolve_source(config.split, labelled) == "hash":
            return None
    split = make_split(
        labels,
        stored,
        class_names,
        config.test_size,
        config.val_size,
        config.seed,
        source=config.split,
        digests=digests,
    )
    if not len(split.val):
        raise DatasetError(
            f"{where}: the validation split is empty; fine-tuning keeps the epoch with the lowest "
            "validation loss, so set --val-size above 0"
            + (" (or add a val/ folder)" if split.source == "stored" and not split.note else "")
        )
    return split


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


def _setup_device(device: str) -> tuple[str, bool]:
    """Make TensorFlow use `device` (auto, cpu or cuda); return (device used, mixed precision on)."""
    tf = require("tensorflow")
    keras = require("keras")
    tf.get_logger().setLevel("ERROR")  # retracing notes when several runs share a process
    gpus = tf.config.list_physical_devices("GPU")
    if device == "cuda" and not gpus:
        raise DeviceError(
            "--device cuda asked for, but TensorFlow sees no GPU (no NVIDIA driver, or a TensorFlow "
            "build without CUDA: pip install 'tensorflow[and-cuda]'); use --device cpu or auto"
        )
    if device == "cpu" and gpus:
        with contextlib.suppress(RuntimeError):  # already initialised: placement below still says cpu
            tf.config.set_visible_devices([], "GPU")
    use_gpu = bool(gpus) and device != "cpu"
    keras.mixed_precision.set_global_policy("mixed_float16" if use_gpu else "float32")
    return ("cuda" if use_gpu else "cpu"), use_gpu


def head_units_of(config: FinetuneConfig) -> int:
    """Units of the head's hidden Dense layer (0: none): `--head-units`, else 128 for simple-cnn."""
    if config.head_units is not None:
        return int(config.head_units)
    return 128 if config.backbone == "simple-cnn" else 0


def _build_network(config: FinetuneConfig, start: Start, n_classes: int, layout: StoreLayout):
    """Build the network of a new run; return (model, number of tunable backbone layers)."""
    from featstore.finetune import networks

    keras = require("keras")
    if start.kind == "scratch":
        backbone = networks.build_scratch_backbone(config.backbone, start.input_size, config.depth)
    elif start.kind == "finetune":
        path, _ = runstore.run_file(layout, start.parent, runstore.CHECKPOINT_FILE)
        networks.custom_layers()
        parent = keras.models.load_model(path, compile=False)
        backbone = parent.get_layer(networks.BACKBONE_LAYER)
    else:
        from featstore.backbones.export import build_keras_backbone

        backbone = networks.as_backbone(build_keras_backbone(start.recipe)[0])
    model = networks.build_classifier(
        backbone,
        n_classes,
        augment=config.augment,
        dropout=config.dropout,
        head_units=head_units_of(config),
        frozen_bn=start.method == METHOD_FINETUNE,
        seed=config.seed,
    )
    return model, len(networks.tunable_layers(backbone))


def finetune(
    data: str | None = None,
    backbone: str | None = None,
    *,
    store: str | None = None,
    name: str | None = None,
    weights: str | None = None,
    input_size: int | None = None,
    resize: str = "squash",
    epochs: int = 10,
    warmup_epochs: int = 2,
    unfreeze: str | None = None,
    lr: float = 1e-3,
    fine_lr: float = 1e-4,
    batch_size: int = 32,
    augment: str | None = None,
    dropout: float = 0.2,
    head_units: int | None = None,
    label_smoothing: float = 0.0,
    class_weights: bool = False,
    patience: int = 5,
    depth: int = 3,
    test_size: float = 0.2,
    val_size: float = 0.1,
    seed: int = 0,
    split: str = "auto",
    device: str = "auto",
    n_workers: int | None = None,
    resume: str | None = None,
    emissions: bool = True,
    country: str | None = None,
    progress: StageProgress | None = None,
    log: Callable[[str], None] | None = None,
) -> FinetuneResult:
    """Train a network end to end on the labelled images of `data` and save the run in the store.

    Parameters
    ----------
    data
        A folder of class folders (or train/val/test folders) or a CSV manifest, as for `extract`.
    backbone
        A registry name (ImageNet weights by default: fine-tuning; `weights="none"`: from
        scratch), a .keras file, `simple-cnn` or `lenet` (from scratch), or `finetune:<run-id>`
        (an earlier run's network, fine-tuned again).
    epochs, warmup_epochs, unfreeze
        Epochs in all; the first `warmup_epochs` train the head only, the rest the top
        `unfreeze` layers of the backbone too (`all`, a count, or a fraction; default 30, or
        all when the network has fewer) at `fine_lr`.
        From scratch, every layer trains for every epoch at `lr`.
    test_size, val_size, seed, split
        The split, as for `fit_head`: `split` is `auto` (stored when the data has one, else
        stratified), `stored`, `stratified` or `hash` (from each image's content digest, made
        once the images are read). With stored train and val parts and no test part, val is the
        held-out test set and validation is carved from train; `log` gets that note.
    resume
        Id of an unfinished run: continue from its last checkpoint with its own options.

    Returns
    -------
    FinetuneResult
        Metrics per split, epochs, parameters, GFLOPs per image, seconds, images/s, energy.

    Raises
    ------
    DatasetError, UnknownBackboneError, WeightsNotFoundError, StoreError, DeviceError
        Bad input, found before any long work where it can be known in advance.
    """
    log = log or (lambda msg: None)
    if device not in TF_DEVICES:
        raise DeviceError(
            f"--device for finetune must be one of {', '.join(TF_DEVICES)}, not {device!r} "
            "(TensorFlow trains; tensorrt is for inference)"
        )
    layout = resolve_store(store)
    if resume is not None:
        if data is not None or backbone is not None:
            raise DatasetError(
                f"--resume {resume} continues with the run's own options; drop --data and --backbone"
            )
        meta = runstore.read_run_meta(layout, resume)
        if meta.get("status") == "done":
            raise StoreError(f"fine-tune run {resume} is finished already; start a new run")
        config, run_id = FinetuneConfig.from_dict(meta["config"]), resume
    else:
        if data is None or backbone is None:
            raise DatasetError("give --backbone and --data (or --resume RUN_ID)")
        config = FinetuneConfig(
            backbone=backbone,
            data=str(Path(data).expanduser().absolute()),
            dataset="",
            weights=weights,
            input_size=input_size,
            resize=resize,
            epochs=epochs,
            warmup_epochs=warmup_epochs,
            unfreeze=None if unfreeze is None else str(unfreeze),
            lr=lr,
            fine_lr=fine_lr,
            batch_size=batch_size,
            augment=parse_augment_ops(augment),
            dropout=dropout,
            head_units=head_units,
            label_smoothing=label_smoothing,
            class_weights=class_weights,
            patience=patience,
            depth=depth,
            test_size=test_size,
            val_size=val_size,
            seed=seed,
            split=split,
        ).check()
        run_id = check_name(name, "run id") if name else None
    dataset = scan_dataset(config.data)
    config.dataset = dataset.name
    _check_dataset(dataset)
    start = resolve_start(config, layout, progress, log)
    labels = [it.label for it in dataset.items]
    _split(labels, [it.split for it in dataset.items], dataset.class_names, config, str(dataset.root))
    run_id = run_id or new_run_id(dataset.name, start.label)
    folder = runstore.run_dir(layout, run_id)
    if resume is None and folder.exists():
        raise StoreError(
            f"fine-tune run {run_id} exists already; choose another --name, or --resume {run_id}"
        )
    from featstore.store.featuresets import feature_set_lock

    try:
        with feature_set_lock(layout.finetune / f"{run_id}.run"):
            job = _Run(layout, folder, run_id, config, start, dataset, device, n_workers, progress, log)
            return job.run(resume is not None, emissions, country)
    except StoreLockedError as err:
        raise StoreError(
            f"fine-tune run {run_id} is being trained by another featstore process ({err})"
        ) from None


class _Run:
    """One session of a run (a new run, or a resumed one), holding its lock."""

    def __init__(self, layout, folder, run_id, config, start, dataset, device, n_workers, progress, log):
        self.layout: StoreLayout = layout
        self.folder: Path = folder
        self.run_id: str = run_id
        self.config: FinetuneConfig = config
        self.start: Start = start
        self.dataset: Dataset = dataset
        self.device_asked = device
        self.n_workers = n_workers or os.cpu_count() or 1
        self.progress = progress
        self.log = log
        self.meta: dict = {}

    def _write_meta(self) -> None:
        write_atomic(self.folder / runstore.META_FILE, json.dumps(self.meta, indent=2, default=str).encode())

    def run(self, resuming: bool, emissions: bool, country: str | None) -> FinetuneResult:
        from featstore.finetune import networks, training

        t0 = time.perf_counter()
        cfg, start, ds = self.config, self.start, self.dataset
        device, mixed = _setup_device(self.device_asked)
        networks.custom_layers()
        state = training.read_state(self.folder) if resuming else TrainState()
        n_classes = len(ds.class_names)
        if resuming:
            self.meta = runstore.read_run_meta(self.layout, self.run_id)
            n_unfreeze, n_features = self.meta["n_unfreeze"], self.meta["n_features"]
            model = training.load_checkpoint(self.folder, state) if state.checkpoint else None
            if model is None:
                model, _ = _build_network(cfg, start, n_classes, self.layout)
            self.log(f"resuming {self.run_id} after epoch {state.epochs_done} of {cfg.epochs}")
        else:
            model, n_layers = _build_network(cfg, start, n_classes, self.layout)
            n_unfreeze = n_layers
            if start.method == METHOD_FINETUNE and cfg.unfreeze is not None:
                n_unfreeze = Unfreeze(cfg.unfreeze).count(n_layers, start.label)
            elif start.method == METHOD_FINETUNE:
                n_unfreeze = min(DEFAULT_UNFREEZE, n_layers)
            n_features = int(model.get_layer(networks.BACKBONE_LAYER).output.shape[-1])
        size = start.input_size
        n_params = sum(int(np.prod(w.shape)) for w in model.weights)
        need = len(ds.items) * size * size * 3 + 8 * 4 * n_params + (20 << 20)
        check_disk_space(
            self.layout.finetune, need, f"fine-tune run {self.run_id} (decoded images, checkpoints)"
        )
        new_folder = not resuming
        self.folder.mkdir(parents=True, exist_ok=True)
        if not resuming:
            self.meta = {
                "run_id": self.run_id,
                "status": "running",
                "dataset": ds.name,
                "data": str(ds.root),
                "classes": ds.class_names,
                "input_size": size,
                "resize": cfg.resize,
                "backbone": cfg.backbone,
                "backbone_label": start.label,
                "method": start.method,
                "parent_run": start.parent,
                "n_features": n_features,
                "n_unfreeze": n_unfreeze,
                "keras_backbone_layer": networks.BACKBONE_LAYER,
                "config": cfg.to_dict(),
                "files_sha256": {},
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
        self.meta.update(status="running", pid=os.getpid(), device=device, mixed_precision=mixed)
        self._write_meta()
        try:
            with track_emissions(emissions, country, self.layout.emissions) as tracker:
                pixels, kept, skipped = self._decode(size)
                split = self._make_split(kept)
                data = self._train_data(pixels, kept, split, n_classes)
                plan = training.Schedule(
                    epochs=cfg.epochs,
                    warmup_epochs=cfg.warmup_epochs,
                    method=start.method,
                    n_unfreeze=n_unfreeze,
                    lr=cfg.lr,
                    fine_lr=cfg.fine_lr,
                    label_smoothing=cfg.label_smoothing,
                    patience=cfg.patience,
                    batch_size=cfg.batch_size,
                    seed=cfg.seed,
                )
                resumed_from = state.epochs_done if resuming else None
                state = training.train(
                    model,
                    self.folder,
                    data,
                    plan,
                    state,
                    lambda m, phase: networks.set_phase(m, phase, n_unfreeze),
                    self.progress,
                    self.log,
                )
                outputs = self._finish(state, pixels, kept, split, mixed, n_classes)
            wall_s = time.perf_counter() - t0
            return self._record(state, outputs, tracker.result, split, kept, skipped, resumed_from, wall_s)
        except BaseException as err:
            if new_folder and state.epochs_done == 0:
                shutil.rmtree(self.folder, ignore_errors=True)
                raise
            (self.folder / PIXELS_FILE).unlink(missing_ok=True)  # decoded again on --resume
            with contextlib.suppress(Exception):
                self.meta.update(status="interrupted")
                self._write_meta()
            if isinstance(err, StoreError):
                raise StoreError(
                    f"{err}; run {self.run_id} is saved up to epoch {state.epochs_done}: continue it "
                    f"with `featstore finetune --resume {self.run_id}`"
                ) from err
            raise
        finally:
            require("keras").mixed_precision.set_global_policy("float32")

    def _decode(self, size: int):
        """Decode every image once into `pixels.npy` (a memory map); return it, the kept
        (item, digest) pairs in dataset order, and the skipped files."""
        items = self.dataset.items
        path = self.folder / PIXELS_FILE
        pixels = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(len(items), size, size, 3))
        with open(path, "rb+") as f:
            try:
                os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
            except OSError as err:
                raise StoreError(f"no space left for the decoded images in {path} ({err.strerror})") from err
        kept, skipped = [], list(self.dataset.skipped)
        loaded_iter = load_images(
            items, size_px=size, resize=self.config.resize, n_workers=self.n_workers, max_ahead=64
        )
        for done, loaded in enumerate(loaded_iter, start=1):
            if loaded.error:
                skipped.append(Skipped(loaded.item.rel, loaded.error))
            else:
                pixels[len(kept)] = loaded.pixels
                kept.append((loaded.item, loaded.digest))
            if self.progress:
                self.progress(done, len(items), "decode")
        pixels.flush()
        if not kept:
            reasons = "; ".join(f"{s.path}: {s.reason}" for s in skipped[:3])
            raise DatasetError(
                f"none of the {len(items)} images of {self.dataset.root} could be read ({reasons})"
            )
        n_bad = len(skipped) - len(self.dataset.skipped)
        self.log(
            f"decoded {len(kept)} images at {size} px ({self.config.resize})"
            + (f", {n_bad} skipped" if n_bad else "")
        )
        return pixels[: len(kept)], kept, skipped

    def _make_split(self, kept) -> Split:
        """The split of the readable images, as fit-head makes it; a resumed run checks it is unchanged."""
        split = _split(
            [it.label for it, _ in kept],
            [it.split for it, _ in kept],
            self.dataset.class_names,
            self.config,
            str(self.dataset.root),
            [digest for _, digest in kept],
        )
        if split.note:
            self.log(split.note)
        digests = {p: [kept[i][1] for i in getattr(split, p)] for p in ("train", "val", "test")}
        path = self.folder / SPLIT_FILE
        if path.is_file():
            if json.loads(path.read_text()) != digests:
                raise DatasetError(
                    f"the images of {self.dataset.root} changed since run {self.run_id} started "
                    "(its split differs); start a new run"
                )
        else:
            write_atomic(path, json.dumps(digests).encode())
        return split

    def _train_data(self, pixels, kept, split: Split, n_classes: int) -> TrainData:
        labels = np.array([it.label for it, _ in kept])
        onehot = np.eye(n_classes, dtype=np.float32)[labels]
        weights = None
        if self.config.class_weights:
            from sklearn.utils.class_weight import compute_class_weight

            train_labels = labels[split.train]
            cw = compute_class_weight("balanced", classes=np.arange(n_classes), y=train_labels)
            weights = cw[labels].astype(np.float32)
        return TrainData(pixels, onehot, weights, split.train, split.val)

    def _finish(self, state: TrainState, pixels, kept, split: Split, mixed: bool, n_classes: int) -> dict:
        """Export the best network twice, verify both, score it, write every report file."""
        from featstore.backbones.export import convert_keras, count_flops
        from featstore.finetune import networks, training
        from featstore.heads.metrics import classification_metrics
        from featstore.plots import confusion_png, learning_curves_png

        keras = require("keras")
        best_path = training.best_checkpoint(self.folder, state)
        model = keras.models.load_model(best_path, compile=False)
        if mixed:  # export a float32 twin with the same weights
            keras.mixed_precision.set_global_policy("float32")
            twin, _ = _build_network(self.config, self.start, n_classes, self.layout)
            twin.set_weights(model.get_weights())
            model = twin
        classifier, backbone = networks.inference_models(model)
        size = self.start.input_size
        rng = np.random.default_rng(self.config.seed)
        check = np.concatenate(
            [
                rng.integers(0, 256, (N_CHECK_IMAGES // 2, size, size, 3)).astype(np.uint8),
                np.asarray(pixels[np.sort(split.val[: N_CHECK_IMAGES // 2])]),
            ]
        )
        errors, files = {}, {}
        for file, net in ((runstore.CLASSIFIER_FILE, classifier), (runstore.BACKBONE_FILE, backbone)):
            data, _, err = convert_keras(
                net, lambda x, net=net: net(x, training=False), check, f"{file} of run {self.run_id}"
            )
            write_atomic(self.folder / file, data)
            errors[file] = err
        write_atomic(self.folder / runstore.CHECKPOINT_FILE, best_path.read_bytes())
        for file in (runstore.CLASSIFIER_FILE, runstore.BACKBONE_FILE, runstore.CHECKPOINT_FILE):
            files[file] = sha256_file(self.folder / file, cached=False)

        from featstore.runtime import open_session

        session = open_session(self.folder / runstore.CLASSIFIER_FILE, "cpu" if not mixed else "auto")
        labels = np.array([it.label for it, _ in kept])
        metrics, pictures, ips = {}, {}, None
        for part in ("train", "val", "test"):
            idx = getattr(split, part)
            if not len(idx):
                continue
            t1 = time.perf_counter()
            proba = np.concatenate(
                [session.run(np.asarray(pixels[idx[i : i + 64]])) for i in range(0, len(idx), 64)]
            )
            dt = time.perf_counter() - t1
            if part == "test" or ips is None:
                ips = round(len(idx) / dt, 1) if dt > 0 else None
            metrics[part] = classification_metrics(labels[idx], proba, self.dataset.class_names)
            if part != "train":
                pictures[f"confusion_{part}.png"] = confusion_png(
                    metrics[part]["confusion_matrix"],
                    self.dataset.class_names,
                    f"{self.start.method} {self.start.label} ({part})",
                )
        pictures["learning_curves.png"] = learning_curves_png(
            state.history, f"{self.start.method} {self.start.label} on {self.dataset.name} ({self.run_id})"
        )
        total, _ = networks.count_params(classifier)
        trainable = max((p["n_trainable_params"] for p in state.phases), default=0)
        return {
            "metrics": metrics,
            "pictures": pictures,
            "files": files,
            "export_errors": errors,
            "images_per_s": ips,
            "params_total": int(total),
            "params_trainable": int(trainable),
            "gflops_per_image": round(count_flops(classifier) / 1e9, 4),
        }

    def _record(
        self, state, out, em: Emissions, split, kept, skipped, resumed_from, wall_s
    ) -> FinetuneResult:
        """Write the report files and the final meta.json (status done), log the run, clean up."""
        from featstore.cards import finetune_card
        from featstore.finetune import training
        from featstore.heads.fitting import package_versions

        cfg, start = self.config, self.start
        this_train = sum(state.history.get("seconds", [])[(resumed_from or 0) :])
        seconds = round(state.train_seconds + max(wall_s - this_train, 0.0), 3)
        train_ips = round(state.train_images / state.train_seconds, 2) if state.train_seconds else None
        units = head_units_of(cfg)
        head = f"dense-{units}" if units else "dense"
        if state.sessions > 1:
            em.note = (em.note + "; " if em.note else "") + "earlier interrupted sessions not measured"
        self.meta.update(
            status="done",
            head=head,
            split=split.describe(),
            metrics=out["metrics"],
            export_errors=out["export_errors"],
            params_total=out["params_total"],
            params_trainable=out["params_trainable"],
            gflops_per_image=out["gflops_per_image"],
            phases=state.phases,
            epochs_run=state.epochs_done,
            best_epoch=state.best_epoch,
            stopped_early=state.stopped_early,
            seconds=seconds,
            train_seconds=round(state.train_seconds, 3),
            train_images_per_s=train_ips,
            images_per_s=out["images_per_s"],
            n_images=len(kept),
            n_skipped=len(skipped),
            skipped=[s.to_dict() for s in skipped],
            sessions=state.sessions,
            emissions=em.to_dict(),
            versions=package_versions(),
            finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        )
        self.meta.pop("pid", None)
        for name, data in out["pictures"].items():
            write_atomic(self.folder / name, data)
        write_atomic(self.folder / "metrics.json", json.dumps(out["metrics"], indent=2).encode())
        write_atomic(self.folder / training.HISTORY_FILE, json.dumps(state.history).encode())
        write_atomic(self.folder / "card.md", finetune_card(self.meta).encode())
        self.meta["files_sha256"] = out["files"]
        self._write_meta()
        training.remove_checkpoints(self.folder)
        (self.folder / PIXELS_FILE).unlink(missing_ok=True)
        metrics = out["metrics"]
        energy_known = state.sessions == 1
        record_run(
            self.layout,
            {
                "id": self.run_id,
                "command": "finetune",
                "method": start.method,
                "dataset": self.dataset.name,
                "data": str(self.dataset.root),
                "backbone": start.label,
                "head": head,
                "epochs": state.epochs_done,
                "metrics": {p: {k: metrics[p][k] for k in ("accuracy", "macro_f1")} for p in metrics},
                "params_total": out["params_total"],
                "params_trainable": out["params_trainable"],
                "gflops_per_image": out["gflops_per_image"],
                "history": state.history,
                "folder": str(self.folder),
                "split": split.describe(),
                "counts": {
                    "n_images": len(kept),
                    "n_skipped": len(skipped),
                    "n_train": len(split.train),
                    "n_val": len(split.val),
                    "n_test": len(split.test),
                },
                "seconds": seconds,
                "images_per_s": out["images_per_s"],
                "train_images_per_s": train_ips,
                "energy_kwh": em.energy_kwh if energy_known else None,
                "co2_kg": em.co2_kg if energy_known else None,
                "emissions": em.to_dict(),
            },
        )
        return FinetuneResult(
            run_id=self.run_id,
            path=str(self.folder),
            method=start.method,
            backbone=start.label,
            dataset=self.dataset.name,
            class_names=self.dataset.class_names,
            input_size=start.input_size,
            epochs_run=state.epochs_done,
            best_epoch=state.best_epoch,
            stopped_early=state.stopped_early,
            resumed_from_epoch=resumed_from,
            metrics=metrics,
            params_total=out["params_total"],
            params_trainable=out["params_trainable"],
            gflops_per_image=out["gflops_per_image"],
            n_features=int(self.meta["n_features"]),
            export_errors=out["export_errors"],
            seconds=seconds,
            train_images_per_s=train_ips,
            images_per_s=out["images_per_s"],
            device=self.meta["device"],
            mixed_precision=self.meta["mixed_precision"],
            n_images=len(kept),
            split=split.describe(),
            skipped=skipped,
            emissions=em,
        )
