"""The epoch loop of `featstore finetune`: tf.data input, the phases, early stopping, and a
resumable checkpoint written atomically after every epoch with `state.json`."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from featstore.deps import require
from featstore.errors import StoreError
from featstore.files import sha256_file, space_error, write_atomic
from featstore.finetune.options import TrainingOptions
from featstore.options import Record

STATE_FILE = "state.json"
HISTORY_FILE = "history.json"
#: progress(done, total, stage): images done of the training work still to do.
StageProgress = Callable[[int, int, str], None]


@dataclass
class TrainState(Record):
    """Where training stands after the last finished epoch; saved as state.json after each one."""

    epochs_done: int = 0
    phase: str | None = None
    best_val_loss: float | None = None
    best_epoch: int | None = None
    wait: int = 0
    stopped_early: bool = False
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    best_checkpoint: str | None = None
    history: dict = field(default_factory=dict)
    phases: list = field(default_factory=list)
    train_seconds: float = 0.0
    train_images: int = 0
    sessions: int = 0

    @classmethod
    def from_dict(cls, data: dict) -> TrainState:
        """Rebuild from `to_dict` output (unknown keys ignored)."""
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def save_model_atomic(model, path: Path) -> str:
    """Save a Keras model to `path` (.keras) atomically; return the file's sha256."""
    tmp = path.parent / f".{path.stem}.{os.getpid()}.tmp.keras"
    try:
        model.save(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise space_error(err, path) from err
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        cause = err.__cause__ or err.__context__
        if isinstance(cause, OSError):
            raise space_error(cause, path) from err
        raise
    return sha256_file(path, cached=False)


def read_state(folder: Path) -> TrainState:
    """Return the training state of run folder `folder` (a fresh one when none was saved)."""
    path = folder / STATE_FILE
    if not path.is_file():
        return TrainState()
    try:
        return TrainState.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError) as err:
        raise StoreError(f"{path} is damaged ({err}); start a new run") from err


@dataclass
class TrainData:
    """Decoded pixels (n, S, S, 3) uint8 (a memory map), `onehot` (n, C) float32, sample `weights`
    (n,) and each split part's row indices."""

    pixels: np.ndarray
    onehot: np.ndarray
    weights: np.ndarray | None
    train: np.ndarray
    val: np.ndarray


def tf_dataset(data: TrainData, rows: np.ndarray, batch_size: int, shuffle_seed: int | None):
    """A `tf.data` pipeline over `rows`: shuffled each epoch (when seeded), batched, gathered in
    parallel, prefetched; yields (pixels uint8, onehot[, weights])."""
    tf = require("tensorflow")
    size = data.pixels.shape[1]
    n_classes = data.onehot.shape[1]
    with_weights = data.weights is not None
    ds = tf.data.Dataset.from_tensor_slices(np.asarray(rows, dtype=np.int64))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(rows), seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)

    def gather(idx):
        idx = np.asarray(idx)
        out = [data.pixels[idx], data.onehot[idx]]
        if with_weights:
            out.append(data.weights[idx])
        return tuple(out)

    types = [tf.uint8, tf.float32] + ([tf.float32] if with_weights else [])

    def load(idx):
        parts = tf.numpy_function(gather, [idx], types)
        parts[0].set_shape((None, size, size, 3))
        parts[1].set_shape((None, n_classes))
        if with_weights:
            parts[2].set_shape((None,))
        return tuple(parts)

    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def phase_of(epoch: int, warmup_epochs: int, method: str) -> str:
    """Phase of 0-based `epoch`: "scratch", or "head" for the warm-up then "fine-tune"."""
    if method == "scratch":
        return "scratch"
    return "head" if epoch < warmup_epochs else "fine-tune"


def compile_model(model, lr: float, label_smoothing: float) -> None:
    """Compile with Adam at `lr`, categorical cross-entropy with label smoothing, accuracy."""
    keras = require("keras")
    model.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
        metrics=["accuracy"],
    )


def _epoch_callback(
    plan: TrainingOptions,
    state: TrainState,
    folder: Path,
    n_train: int,
    first_todo: int,
    progress: StageProgress | None,
    log: Callable[[str], None],
):
    """A Keras callback: progress per batch; history, checkpoints and early stopping per epoch."""
    keras = require("keras")
    total = n_train * max(plan.epochs - first_todo, 0)

    class EpochEnd(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()
            self.done0 = (epoch - first_todo) * n_train

        def on_train_batch_end(self, batch, logs=None):
            if progress:
                progress(self.done0 + min((batch + 1) * plan.batch_size, n_train), total, "train")

        def on_epoch_end(self, epoch, logs=None):
            seconds = time.perf_counter() - self.t0
            logs = {k: float(v) for k, v in (logs or {}).items()}
            _end_epoch(self.model, epoch, logs, seconds, plan, state, folder, n_train, log)
            if state.stopped_early:
                self.model.stop_training = True

    return EpochEnd()


def train(
    model,
    folder: Path,
    data: TrainData,
    plan: TrainingOptions,
    method: str,
    seed: int,
    state: TrainState,
    set_phase: Callable[[object, str], list[str]],
    progress: StageProgress | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainState:
    """Train `model` from `state` to the end of `plan` (`method` fine-tune or scratch, `seed`
    seeding each epoch), one `fit` per phase.

    After each epoch the network and optimizer go to `ckpt-<epoch>.keras`, a new best (lowest
    validation loss) to `best-<epoch>.keras`, then `history.json` and `state.json` naming them,
    so a killed run resumes from the last epoch recorded. `plan.patience` epochs without a lower
    validation loss stop a phase's run. `set_phase(model, phase)` sets the trainable layers.
    """
    log = log or (lambda msg: None)
    keras = require("keras")
    state.sessions += 1
    n_train = len(data.train)
    first_todo = state.epochs_done
    val_ds = tf_dataset(data, data.val, plan.batch_size, None)
    epoch = state.epochs_done
    while epoch < plan.epochs and not state.stopped_early:
        phase = phase_of(epoch, plan.warmup_epochs, method)
        end = epoch
        while end < plan.epochs and phase_of(end, plan.warmup_epochs, method) == phase:
            end += 1
        if phase != state.phase:
            _enter_phase(model, phase, epoch, plan, state, set_phase, log)
        keras.utils.set_random_seed(seed + epoch)
        model.fit(
            tf_dataset(data, data.train, plan.batch_size, seed + epoch),
            validation_data=val_ds,
            initial_epoch=epoch,
            epochs=end,
            shuffle=False,  # the dataset reshuffles itself each epoch, from its seed
            verbose=0,
            callbacks=[_epoch_callback(plan, state, folder, n_train, first_todo, progress, log)],
        )
        epoch = state.epochs_done
    return state


def _enter_phase(
    model, phase: str, epoch: int, plan: TrainingOptions, state: TrainState, set_phase, log
) -> None:
    """Set the layers `phase` trains, compile at its learning rate, and record it in `state`."""
    trained = set_phase(model, phase)
    lr = plan.fine_lr if phase == "fine-tune" else plan.lr
    compile_model(model, lr, plan.label_smoothing)
    n_trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    state.phases.append(
        {
            "phase": phase,
            "first_epoch": epoch + 1,
            "learning_rate": lr,
            "n_trainable_params": n_trainable,
            "backbone_layers_trained": trained,
        }
    )
    state.phase, state.wait = phase, 0
    log(
        f"phase {phase}: {len(trained)} backbone layers with weights train, "
        f"{n_trainable:,} trainable parameters, learning rate {lr:g}"
    )


def _end_epoch(model, epoch, logs, seconds, plan, state: TrainState, folder, n_train, log) -> None:
    """Record epoch `epoch` (0-based): history, best checkpoint, early stopping, checkpoint."""
    phase = state.phase
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        state.history.setdefault(key, []).append(logs.get(key))
    state.history.setdefault("phase", []).append(phase)
    state.history.setdefault("seconds", []).append(round(seconds, 3))
    state.train_seconds += seconds
    state.train_images += n_train
    val_loss = logs.get("val_loss")
    improved = val_loss is not None and bool(np.isfinite(val_loss))
    improved = improved and (state.best_val_loss is None or val_loss < state.best_val_loss)
    if improved:
        state.best_val_loss, state.best_epoch, state.wait = val_loss, epoch + 1, 0
        state.best_checkpoint = f"best-{epoch + 1:04d}.keras"
        save_model_atomic(model, folder / state.best_checkpoint)
    else:
        state.wait += 1
    state.epochs_done = epoch + 1
    if state.wait >= plan.patience and epoch + 1 < plan.epochs:
        state.stopped_early = True
    _checkpoint(model, folder, state)
    nan = float("nan")
    log(
        f"epoch {epoch + 1}/{plan.epochs} ({phase}): loss {logs.get('loss', nan):.4f}, "
        f"accuracy {logs.get('accuracy', nan):.3f}, val_loss {logs.get('val_loss', nan):.4f}, "
        f"val_accuracy {logs.get('val_accuracy', nan):.3f}, {seconds:.0f} s "
        f"({n_train / max(seconds, 1e-9):.1f} images/s)" + (" *best*" if improved else "")
    )
    if state.stopped_early:
        log(f"early stop: no lower val_loss for {plan.patience} epochs; best epoch {state.best_epoch}")


def _checkpoint(model, folder: Path, state: TrainState) -> None:
    """Write ckpt-<epoch>.keras, then state.json naming it, then drop the checkpoints it no
    longer names."""
    name = f"ckpt-{state.epochs_done:04d}.keras"
    state.checkpoint_sha256 = save_model_atomic(model, folder / name)
    state.checkpoint = name
    write_atomic(folder / HISTORY_FILE, json.dumps(state.history).encode())
    write_atomic(folder / STATE_FILE, json.dumps(state.to_dict(), indent=1).encode())
    keep = {name, state.best_checkpoint}
    for old in [*folder.glob("ckpt-*.keras"), *folder.glob("best-*.keras")]:
        if old.name not in keep:
            old.unlink(missing_ok=True)


def load_checkpoint(folder: Path, state: TrainState):
    """Load the checkpoint `state` names (network, optimizer, compile settings); StoreError when it
    is missing or differs from its recorded sha256."""
    keras = require("keras")
    path = folder / (state.checkpoint or "")
    if not state.checkpoint or not path.is_file():
        raise StoreError(f"{folder} has no checkpoint {state.checkpoint!r}; start a new run")
    if sha256_file(path, cached=False) != state.checkpoint_sha256:
        raise StoreError(f"{path} changed since it was written (sha256 differs from {STATE_FILE})")
    return keras.models.load_model(path)


def best_checkpoint(folder: Path, state: TrainState) -> Path:
    """The checkpoint of the best epoch (lowest validation loss), else of the last epoch."""
    path = folder / (state.best_checkpoint or state.checkpoint or "")
    if not path.is_file():
        raise StoreError(f"{folder} has no checkpoint of its best epoch ({path.name}); start a new run")
    return path


def remove_checkpoints(folder: Path) -> None:
    """Delete the per-epoch checkpoints of a finished run (best.keras stays)."""
    for path in [*folder.glob("ckpt-*.keras"), *folder.glob("best-*.keras")]:
        path.unlink(missing_ok=True)
    for path in folder.glob(".*.tmp.keras"):
        path.unlink(missing_ok=True)
