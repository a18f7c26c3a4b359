"""Which images calibrate an int8 model, and what int8 costs in accuracy.

Owns the calibration sample (images spread evenly over the dataset, decoded exactly as
`extract` decodes them, identified by a digest of their content digests and the decoding
settings), the held-out check sample (other images of the same dataset), and the accuracy
check: cosine similarity of int8 and fp32 features, and the accuracy of a quick logistic head
cross-validated on each. Imports `data.decode` and `data.scan`; scikit-learn inside
`compare_features`; never TensorFlow.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from featstore.data.decode import load_images
from featstore.data.scan import ImageItem

#: Images that calibrate an int8 model, and images of the accuracy check, by default.
N_CALIBRATION = 200
N_CHECK = 300


def spread(n_total: int, n: int, exclude: frozenset | set = frozenset()) -> list[int]:
    """Indices of `n` of `range(n_total)` spread evenly, skipping `exclude`; sorted."""
    pool = [i for i in range(n_total) if i not in exclude]
    if n >= len(pool):
        return pool
    picks = np.linspace(0, len(pool) - 1, n).round().astype(int)
    return sorted({pool[i] for i in picks})


@dataclass
class Sample:
    """Decoded images of a sample: (n, size, size, 3) uint8 `pixels`, labels, content digests."""

    dataset: str
    pixels: np.ndarray
    labels: np.ndarray
    digests: list[str]
    size_px: int
    resize: str

    @property
    def digest(self) -> str:
        """Hex SHA-256 of the images' content digests (sorted) and the decoding settings."""
        payload = {"digests": sorted(self.digests), "size_px": self.size_px, "resize": self.resize}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def describe(self) -> dict:
        """What a variant records about its calibration sample."""
        return {"dataset": self.dataset, "n_images": len(self.digests), "digest": self.digest}


def decode_sample(
    dataset: str,
    items: list[ImageItem],
    size_px: int,
    resize: str,
    decoder: str = "pillow",
    n_workers: int = 2,
) -> Sample:
    """Read and decode `items` as extract does; unreadable files are left out.

    Identical files (same content digest) count once.
    """
    pixels, labels, digests, seen = [], [], [], set()
    for loaded in load_images(items, size_px=size_px, resize=resize, n_workers=n_workers, decoder=decoder):
        if loaded.pixels is None or loaded.digest in seen:
            continue
        seen.add(loaded.digest)
        pixels.append(loaded.pixels)
        labels.append(loaded.item.label)
        digests.append(loaded.digest)
    shape = (0, size_px, size_px, 3)
    arr = np.stack(pixels) if pixels else np.zeros(shape, np.uint8)
    return Sample(dataset, arr, np.asarray(labels, dtype=np.int64), digests, size_px, resize)


def run_batches(session, pixels: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Features of `pixels` through a `runtime.BackboneSession`: (n, n_features) float32."""
    return np.concatenate(
        [session.run(pixels[i : i + batch_size]) for i in range(0, len(pixels), batch_size)]
    )


def compare_features(reference: np.ndarray, other: np.ndarray, labels: np.ndarray, seed: int = 0) -> dict:
    """Compare `other` features (int8) with `reference` features (fp32) of the same images.

    Returns cosine similarity (mean, min) and, when at least two classes have two labelled
    images each, the accuracy of a standardised logistic regression cross-validated on each
    (the same stratified folds), their difference in percentage points and how often both
    predict the same class.
    """
    ref = reference.astype(np.float64)
    oth = other.astype(np.float64)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(oth, axis=1)
    cos = (ref * oth).sum(axis=1) / np.maximum(norms, np.finfo(np.float64).tiny)
    out: dict = {
        "n_images": len(ref),
        "cosine_mean": round(float(cos.mean()), 6) if len(cos) else None,
        "cosine_min": round(float(cos.min()), 6) if len(cos) else None,
        "fp32_accuracy": None,
        "int8_accuracy": None,
        "accuracy_loss_points": None,
        "agreement": None,
        "note": None,
    }
    keep = labels >= 0
    classes, counts = np.unique(labels[keep], return_counts=True)
    good = classes[counts >= 2]
    keep &= np.isin(labels, good)
    if len(good) < 2:
        out["note"] = "no accuracy check: needs labelled images of at least two classes, two each"
        return out
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = labels[keep]
    folds = StratifiedKFold(
        n_splits=int(min(5, counts[np.isin(classes, good)].min())), shuffle=True, random_state=seed
    )
    preds = []
    for X in (ref[keep], oth[keep]):
        head = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=300, tol=1e-3))
        preds.append(cross_val_predict(head, X, y, cv=folds))
    acc = [float((p == y).mean()) for p in preds]
    out.update(
        fp32_accuracy=round(acc[0], 6),
        int8_accuracy=round(acc[1], 6),
        accuracy_loss_points=round(100 * (acc[0] - acc[1]), 3),
        agreement=round(float((preds[0] == preds[1]).mean()), 6),
        n_labelled=int(keep.sum()),
        n_folds=folds.n_splits,
    )
    return out
