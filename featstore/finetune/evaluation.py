"""A trained network exported and measured: `classifier.onnx` and `backbone.onnx` (checked against
Keras), the metrics of each part through ONNX Runtime, confusion matrices, learning curves,
parameters and GFLOPs."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featstore.data.splits import Split
from featstore.deps import require
from featstore.files import sha256_file, write_atomic
from featstore.finetune import networks, training
from featstore.finetune.training import TrainState
from featstore.store import run_files

#: Images checked through Keras and ONNX Runtime when a run's networks are exported.
N_CHECK_IMAGES = 8
#: Images per ONNX Runtime call when scoring the split parts.
SCORE_BATCH = 64


@dataclass
class Outputs:
    """What the export and evaluation made: `metrics` per part, pictures (name -> PNG bytes), each
    model file's sha256, ONNX-vs-Keras errors, images/s, parameters and GFLOPs per image."""

    metrics: dict
    pictures: dict[str, bytes]
    files: dict[str, str]
    export_errors: dict[str, float]
    images_per_s: float | None
    params_total: int
    params_trainable: int
    gflops_per_image: float


def _check_pixels(pixels, split: Split, size: int, seed: int) -> np.ndarray:
    """(N_CHECK_IMAGES, S, S, 3) uint8: random pixels, then validation images."""
    rng = np.random.default_rng(seed)
    half = N_CHECK_IMAGES // 2
    noise = rng.integers(0, 256, (half, size, size, 3)).astype(np.uint8)
    return np.concatenate([noise, np.asarray(pixels[np.sort(split.val[:half])])])


def export_networks(model, folder: Path, run_id: str, check: np.ndarray, best_path: Path):
    """Write classifier.onnx, backbone.onnx (each checked against Keras on `check`) and
    best.keras into `folder`; return (classifier Keras model, relative errors, sha256 per file)."""
    from featstore.backbones.export import convert_keras

    classifier, backbone = networks.inference_models(model)
    errors, files = {}, {}
    for file, net in ((run_files.CLASSIFIER_FILE, classifier), (run_files.BACKBONE_FILE, backbone)):
        data, _, err = convert_keras(
            net, lambda x, net=net: net(x, training=False), check, f"{file} of run {run_id}"
        )
        write_atomic(folder / file, data)
        errors[file] = err
    write_atomic(folder / run_files.CHECKPOINT_FILE, best_path.read_bytes())
    for file in (run_files.CLASSIFIER_FILE, run_files.BACKBONE_FILE, run_files.CHECKPOINT_FILE):
        files[file] = sha256_file(folder / file, cached=False)
    return classifier, errors, files


def score_parts(
    classifier_path: Path, pixels, labels: np.ndarray, split: Split, class_names, title: str, device: str
):
    """Score every non-empty part with the exported classifier: (metrics per part, confusion
    pictures of val and test, images/s of the test part or else the first part)."""
    from featstore.heads.metrics import classification_metrics
    from featstore.inference.runtimes import open_model, reference_runtime
    from featstore.plots import confusion_png

    session = open_model(classifier_path, reference_runtime(), device)
    metrics, pictures, ips = {}, {}, None
    for part in ("train", "val", "test"):
        idx = getattr(split, part)
        if not len(idx):
            continue
        t1 = time.perf_counter()
        batches = [np.asarray(pixels[idx[i : i + SCORE_BATCH]]) for i in range(0, len(idx), SCORE_BATCH)]
        proba = np.concatenate([session.run(b) for b in batches])
        dt = time.perf_counter() - t1
        if part == "test" or ips is None:
            ips = round(len(idx) / dt, 1) if dt > 0 else None
        metrics[part] = classification_metrics(labels[idx], proba, class_names)
        if part != "train":
            pictures[f"confusion_{part}.png"] = confusion_png(
                metrics[part]["confusion_matrix"], class_names, f"{title} ({part})"
            )
    return metrics, pictures, ips


def evaluate_run(
    plan, state: TrainState, pixels, labels: np.ndarray, split: Split, mixed: bool, rebuild
) -> Outputs:
    """Export the best network of `plan` twice, verify both, score it and draw its pictures;
    `rebuild()` builds a float32 twin when training ran in mixed precision."""
    from featstore.backbones.export import count_flops
    from featstore.plots import learning_curves_png

    keras = require("keras")
    best_path = training.best_checkpoint(plan.folder, state)
    model = keras.models.load_model(best_path, compile=False)
    if mixed:  # export a float32 twin with the same weights
        keras.mixed_precision.set_global_policy("float32")
        twin = rebuild()
        twin.set_weights(model.get_weights())
        model = twin
    check = _check_pixels(pixels, split, plan.start.input_size, plan.options.split.seed)
    classifier, errors, files = export_networks(model, plan.folder, plan.run_id, check, best_path)
    title = f"{plan.start.method} {plan.start.label}"
    metrics, pictures, ips = score_parts(
        plan.folder / run_files.CLASSIFIER_FILE,
        pixels,
        labels,
        split,
        plan.dataset.class_names,
        title,
        "auto" if mixed else "cpu",
    )
    pictures["learning_curves.png"] = learning_curves_png(
        state.history, f"{title} on {plan.dataset.name} ({plan.run_id})"
    )
    total, _ = networks.count_params(classifier)
    return Outputs(
        metrics=metrics,
        pictures=pictures,
        files=files,
        export_errors=errors,
        images_per_s=ips,
        params_total=int(total),
        params_trainable=int(max((p["n_trainable_params"] for p in state.phases), default=0)),
        gflops_per_image=round(count_flops(classifier) / 1e9, 4),
    )
