"""One session of a fine-tune run, new or resumed: the device, the network, the run folder, every
image decoded once as `extract` decodes it, the split of `fit-head`, training and evaluation.

A failure keeps what can be resumed and says how.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time

import numpy as np

from featstore.backbones.export import build_keras_backbone
from featstore.data.decode import load_images, resolve_decoder
from featstore.data.scan import Skipped
from featstore.data.splits import Split
from featstore.deps import require
from featstore.errors import DatasetError, DeviceError, StoreError
from featstore.files import fsync_dir, write_atomic
from featstore.finetune import networks, training
from featstore.finetune.evaluation import evaluate_run
from featstore.finetune.options import DEFAULT_UNFREEZE, Unfreeze
from featstore.finetune.prepare import METHOD_FINETUNE, RunPlan, check_disk_space, make_run_split
from featstore.finetune.results import PIXELS_FILE, Outcome, session_seconds, write_done
from featstore.finetune.training import TrainData, TrainState
from featstore.jobs import Job
from featstore.store import run_files

SPLIT_FILE = "split.json"
#: Images decoded ahead of the one being stored.
DECODE_AHEAD = 64


def setup_device(device: str) -> tuple[str, bool]:
    """Make TensorFlow use `device` (auto, cpu, cuda); return (device used, mixed precision on).
    DeviceError when cuda is asked for and TensorFlow sees no GPU."""
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


def build_network(plan: RunPlan, n_classes: int):
    """Build the network of run `plan`; return (model, number of tunable backbone layers)."""
    keras = require("keras")
    start, network = plan.start, plan.options.network
    if start.kind == "scratch":
        backbone = networks.build_scratch_backbone(plan.config.backbone, start.input_size, network.depth)
    elif start.kind == "finetune":
        path, _ = run_files.run_file(plan.layout, start.parent, run_files.CHECKPOINT_FILE)
        networks.custom_layers()
        backbone = keras.models.load_model(path, compile=False).get_layer(networks.BACKBONE_LAYER)
    else:
        backbone = networks.as_backbone(build_keras_backbone(start.recipe)[0])
    model = networks.build_classifier(
        backbone,
        n_classes,
        augment=list(plan.options.training.augment),
        dropout=network.dropout,
        head_units=network.head_units_for(plan.config.backbone),
        frozen_bn=start.method == METHOD_FINETUNE,
        seed=plan.options.split.seed,
    )
    return model, len(networks.tunable_layers(backbone))


class Session:
    """One session of run `plan` inside `job` (its log, progress and energy measurement)."""

    def __init__(self, plan: RunPlan, job: Job):
        self.plan = plan
        self.job = job
        self.folder = plan.folder
        self.meta: dict = {}
        self.n_classes = len(plan.dataset.class_names)
        self.t0 = time.perf_counter()

    def run(self) -> Outcome:
        """Train, export and evaluate, write the finished run's files and return the outcome; raises
        for a missing GPU, a full disk (the run stays resumable), images changed since the
        run started, or an export that disagrees with Keras."""
        device, mixed = setup_device(self.plan.options.device)
        networks.custom_layers()
        state = training.read_state(self.folder) if self.plan.resuming else TrainState()
        model, n_unfreeze, n_features = self._network(state)
        self._check_space(model)
        self._open_folder(device, mixed, n_unfreeze, n_features)
        try:
            return self._train_and_finish(model, state, n_unfreeze, mixed)
        except BaseException as err:
            self._keep_resumable(err, state)
            raise
        finally:
            require("keras").mixed_precision.set_global_policy("float32")

    def _network(self, state: TrainState):
        """The model to train, the fine-tune phase's unfrozen layers and the features' width: built
        anew, or as a resumed run left it."""
        plan = self.plan
        if plan.resuming:
            self.meta = run_files.read_run_meta(plan.layout, plan.run_id)
            model = training.load_checkpoint(self.folder, state) if state.checkpoint else None
            if model is None:
                model, _ = build_network(plan, self.n_classes)
            epochs = plan.options.training.epochs
            self.job.reporter.log(f"resuming {plan.run_id} after epoch {state.epochs_done} of {epochs}")
            return model, self.meta["n_unfreeze"], self.meta["n_features"]
        model, n_layers = build_network(plan, self.n_classes)
        n_unfreeze = n_layers
        if plan.start.method == METHOD_FINETUNE:
            unfreeze = plan.options.training.unfreeze
            n_unfreeze = (
                Unfreeze(unfreeze).count(n_layers, plan.start.label)
                if unfreeze
                else min(DEFAULT_UNFREEZE, n_layers)
            )
        n_features = int(model.get_layer(networks.BACKBONE_LAYER).output.shape[-1])
        return model, n_unfreeze, n_features

    def _check_space(self, model) -> None:
        """Refuse to start when the disk cannot hold the decoded images and the checkpoints."""
        size = self.plan.start.input_size
        n_params = sum(int(np.prod(w.shape)) for w in model.weights)
        need = len(self.plan.dataset.items) * size * size * 3 + 8 * 4 * n_params + (20 << 20)
        what = f"fine-tune run {self.plan.run_id} (decoded images, checkpoints)"
        check_disk_space(self.plan.layout.finetune, need, what)

    def _new_meta(self, n_unfreeze: int, n_features: int) -> dict:
        plan, ds = self.plan, self.plan.dataset
        return {
            "run_id": plan.run_id,
            "status": "running",
            "dataset": ds.name,
            "data": str(ds.root),
            "classes": ds.class_names,
            "input_size": plan.start.input_size,
            "resize": plan.options.decode.resize,
            "backbone": plan.config.backbone,
            "backbone_label": plan.start.label,
            "method": plan.start.method,
            "parent_run": plan.start.parent,
            "n_features": n_features,
            "n_unfreeze": n_unfreeze,
            "keras_backbone_layer": networks.BACKBONE_LAYER,
            "config": plan.config.to_dict(),
            "files_sha256": {},
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }

    def _open_folder(self, device: str, mixed: bool, n_unfreeze: int, n_features: int) -> None:
        """Mark the run running in meta.json; a new run's folder appears whole, by a rename."""
        if self.plan.resuming:
            self.meta.update(status="running", pid=os.getpid(), device=device, mixed_precision=mixed)
            run_files.write_run_meta(self.folder, self.meta)
            return
        self.meta = self._new_meta(n_unfreeze, n_features)
        self.meta.update(pid=os.getpid(), device=device, mixed_precision=mixed)
        parent = self.folder.parent
        parent.mkdir(parents=True, exist_ok=True)
        tmp = parent / f".{self.plan.run_id}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            run_files.write_run_meta(tmp, self.meta)
            os.rename(tmp, self.folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        fsync_dir(parent)

    def _train_and_finish(self, model, state: TrainState, n_unfreeze: int, mixed: bool) -> Outcome:
        plan = self.plan
        self.job.begin()
        pixels, kept, skipped = self._decode()
        split = self._make_split(kept)
        labels = np.array([it.label for it, _ in kept])
        resumed_from = state.epochs_done if plan.resuming else None
        state = training.train(
            model,
            self.folder,
            self._train_data(pixels, labels, split),
            plan.options.training,
            plan.start.method,
            plan.options.split.seed,
            state,
            lambda m, phase: networks.set_phase(m, phase, n_unfreeze),
            self.job.reporter.progress,
            self.job.reporter.log,
        )
        rebuild = lambda: build_network(plan, self.n_classes)[0]  # noqa: E731
        outputs = evaluate_run(plan, state, pixels, labels, split, mixed, rebuild)
        seconds = session_seconds(state, resumed_from, time.perf_counter() - self.t0)
        train_ips = round(state.train_images / state.train_seconds, 2) if state.train_seconds else None
        outcome = Outcome(
            plan, self.meta, state, outputs, split, len(kept), skipped, resumed_from, seconds, train_ips
        )
        write_done(outcome)
        return outcome

    def _keep_resumable(self, err: BaseException, state: TrainState) -> None:
        """After a failure: a new run with no finished epoch leaves nothing; otherwise it is marked
        interrupted and a StoreError says how to resume."""
        if not self.plan.resuming and state.epochs_done == 0:
            shutil.rmtree(self.folder, ignore_errors=True)
            return
        (self.folder / PIXELS_FILE).unlink(missing_ok=True)  # decoded again on --resume
        with contextlib.suppress(Exception):
            self.meta.update(status="interrupted")
            run_files.write_run_meta(self.folder, self.meta)
        if isinstance(err, StoreError):
            raise StoreError(
                f"{err}; run {self.plan.run_id} is saved up to epoch {state.epochs_done}: continue it "
                f"with `featstore finetune --resume {self.plan.run_id}`"
            ) from err

    def _decode(self):
        """Decode every image once into `pixels.npy` (a memory map); return it, the kept (item,
        digest) pairs and the skipped files."""
        ds, size, decode = self.plan.dataset, self.plan.start.input_size, self.plan.options.decode
        pixels = self._pixel_cache(len(ds.items), size)
        kept, skipped = [], list(ds.skipped)
        loaded_iter = load_images(
            ds.items,
            size_px=size,
            resize=decode.resize,
            n_workers=decode.n_workers or os.cpu_count() or 1,
            max_ahead=DECODE_AHEAD,
            decoder=resolve_decoder(decode.decoder),
        )
        for done, loaded in enumerate(loaded_iter, start=1):
            if loaded.error:
                skipped.append(Skipped(loaded.item.rel, loaded.error))
            else:
                pixels[len(kept)] = loaded.pixels
                kept.append((loaded.item, loaded.digest))
            self.job.reporter.progress(done, len(ds.items), "decode")
        pixels.flush()
        if not kept:
            reasons = "; ".join(f"{s.path}: {s.reason}" for s in skipped[:3])
            raise DatasetError(f"none of the {len(ds.items)} images of {ds.root} could be read ({reasons})")
        n_bad = len(skipped) - len(ds.skipped)
        self.job.reporter.log(
            f"decoded {len(kept)} images at {size} px ({decode.resize})"
            + (f", {n_bad} skipped" if n_bad else "")
        )
        return pixels[: len(kept)], kept, skipped

    def _pixel_cache(self, n: int, size: int) -> np.ndarray:
        """A (n, size, size, 3) uint8 memory map in the run folder, its space reserved."""
        path = self.folder / PIXELS_FILE
        pixels = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, size, size, 3))
        with open(path, "rb+") as f:
            try:
                os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
            except OSError as err:
                raise StoreError(f"no space left for the decoded images in {path} ({err.strerror})") from err
        return pixels

    def _make_split(self, kept) -> Split:
        """The split of the readable images, as fit-head makes it; a resumed run checks it is unchanged."""
        ds = self.plan.dataset
        split = make_run_split(
            [it.label for it, _ in kept],
            [it.split for it, _ in kept],
            ds.class_names,
            self.plan.options.split,
            str(ds.root),
            [digest for _, digest in kept],
        )
        if split.note:
            self.job.reporter.log(split.note)
        digests = {p: [kept[i][1] for i in getattr(split, p)] for p in ("train", "val", "test")}
        path = self.folder / SPLIT_FILE
        if path.is_file():
            if json.loads(path.read_text()) != digests:
                raise DatasetError(
                    f"the images of {ds.root} changed since run {self.plan.run_id} started "
                    "(its split differs); start a new run"
                )
        else:
            write_atomic(path, json.dumps(digests).encode())
        return split

    def _train_data(self, pixels, labels: np.ndarray, split: Split) -> TrainData:
        onehot = np.eye(self.n_classes, dtype=np.float32)[labels]
        weights = None
        if self.plan.options.training.class_weights:
            from sklearn.utils.class_weight import compute_class_weight

            classes = np.arange(self.n_classes)
            weights = compute_class_weight("balanced", classes=classes, y=labels[split.train])[labels].astype(
                np.float32
            )
        return TrainData(pixels, onehot, weights, split.train, split.val)
