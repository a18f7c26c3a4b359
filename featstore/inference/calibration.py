"""Which images calibrate an int8 model, and what a precision costs against fp32 (`Checker`:
cosine similarity, the accuracy of a quick head on each, speed)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featstore.data.decode import load_images
from featstore.data.options import Size, hw
from featstore.data.scan import ImageItem
from featstore.inference.devices import default_threads

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
    size_px: Size
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
    size_px: Size,
    resize: str,
    decoder: str = "pillow",
    n_workers: int = 2,
) -> Sample:
    """Read and decode `items` as extract does, each content digest once; unreadable files left out."""
    pixels, labels, digests, seen = [], [], [], set()
    for loaded in load_images(items, size_px=size_px, resize=resize, n_workers=n_workers, decoder=decoder):
        if loaded.pixels is None or loaded.digest in seen:
            continue
        seen.add(loaded.digest)
        pixels.append(loaded.pixels)
        labels.append(loaded.item.label)
        digests.append(loaded.digest)
    shape = (0, *hw(size_px), 3)
    arr = np.stack(pixels) if pixels else np.zeros(shape, np.uint8)
    return Sample(dataset, arr, np.asarray(labels, dtype=np.int64), digests, size_px, resize)


def timed_batches(session, pixels: np.ndarray, batch_size: int = 32) -> tuple[np.ndarray, float | None]:
    """Features of `pixels` and the images/s of the batches after the first (which allocates);
    all of them when there is one. None for no images."""
    feats, seconds, n_timed = [], 0.0, 0
    for k, i in enumerate(range(0, len(pixels), batch_size)):
        t0 = time.perf_counter()
        feats.append(session.run(pixels[i : i + batch_size]))
        if k > 0 or len(pixels) <= batch_size:
            seconds += time.perf_counter() - t0
            n_timed += len(feats[-1])
    if not feats:
        return np.zeros((0, 0), np.float32), None
    return np.concatenate(feats), (round(n_timed / seconds, 2) if seconds > 0 else None)


def compare_features(
    reference: np.ndarray, other: np.ndarray, labels: np.ndarray, seed: int = 0, name: str = "int8"
) -> dict:
    """Compare features `other` (precision `name`) with fp32 features `reference` of the same
    images: cosine similarity (mean, min) and, with two labelled images in two classes, the
    cross-validated accuracy of a logistic head on each, their difference in points and how
    often they agree."""
    ref = reference.astype(np.float64)
    oth = other.astype(np.float64)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(oth, axis=1)
    cos = (ref * oth).sum(axis=1) / np.maximum(norms, np.finfo(np.float64).tiny)
    out: dict = {
        "n_images": len(ref),
        "cosine_mean": round(float(cos.mean()), 6) if len(cos) else None,
        "cosine_min": round(float(cos.min()), 6) if len(cos) else None,
        "fp32_accuracy": None,
        f"{name}_accuracy": None,
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
        **{f"{name}_accuracy": round(acc[1], 6)},
        accuracy_loss_points=round(100 * (acc[0] - acc[1]), 3),
        agreement=round(float((preds[0] == preds[1]).mean()), 6),
        n_labelled=int(keep.sum()),
        n_folds=folds.n_splits,
    )
    return out


class Checker:
    """The calibration and check samples of one dataset (`spec`: name, items, size_px, resize,
    decoder, n_calibration, n_check, fp32_path, n_threads), each decoded once, and the check
    of a variant against fp32."""

    def __init__(self, spec: dict, log: Callable[[str], None]):
        self.spec, self.log = spec, log
        n = len(spec["items"])
        self.cal_idx = spread(n, spec["n_calibration"])
        n_chk = spec["n_check"]
        self.chk_idx = spread(n, n_chk, exclude=set(self.cal_idx)) or (self.cal_idx[:n_chk] if n_chk else [])
        self._check_sample: Sample | None = None
        self._runs: dict[tuple, tuple[np.ndarray, float | None]] = {}

    def _decode(self, idx: list[int]) -> Sample:
        s = self.spec
        items = [s["items"][i] for i in idx]
        return decode_sample(s["name"], items, s["size_px"], s["resize"], s["decoder"])

    def calibration_sample(self) -> Sample:
        """The images an int8 model is calibrated on, decoded as extract decodes them."""
        self.log(f"decoding {len(self.cal_idx)} calibration images")
        return self._decode(self.cal_idx)

    @property
    def held_out(self) -> bool:
        """True when the check images are other images than the calibration sample's."""
        return bool(set(self.chk_idx) - set(self.cal_idx))

    def _run(
        self, path: Path, precision: str, runtime, settings: dict | None
    ) -> tuple[np.ndarray, float | None]:
        """Features of the check sample through `path` at `precision` under `runtime`, and images/s."""
        key = (str(path), precision, runtime.name, json.dumps(settings, sort_keys=True))
        if key not in self._runs:
            if self._check_sample is None:
                self._check_sample = self._decode(self.chk_idx)
            session = runtime.open(
                path,
                "cpu",
                self.spec["n_threads"] or default_threads(),
                precision=precision,
                settings=settings,
            )
            self._runs[key] = timed_batches(session, self._check_sample.pixels)
        return self._runs[key]

    def check(
        self, path: Path, precision: str, runtime, settings, also=(), also_precision: str | None = None
    ):
        """Compare `path` at `precision` under `runtime` with the fp32 export under the same runtime:
        `compare_features` and both speeds; `speeds` adds the runtimes `also`. None when there
        are no images to check on."""
        if not self.chk_idx:
            return None
        where = "held-out " if self.held_out else ""
        self.log(f"checking {precision} ({runtime.name}) against fp32 on {len(self.chk_idx)} {where}images")
        ref, ref_ips = self._run(self.spec["fp32_path"], "fp32", runtime, None)
        got, ips = self._run(path, precision, runtime, settings)
        out = compare_features(ref, got, self._check_sample.labels, name=precision)
        speeds = {f"{runtime.name} fp32": ref_ips, f"{runtime.name} {precision}": ips}
        other_precision = also_precision or precision
        for other in also:
            run = self._run(path, other_precision, other, other.derived.get(other_precision))
            speeds[f"{other.name} {other_precision}"] = run[1]
        return {
            **out,
            "runtime": runtime.name,
            "fp32_images_per_s": ref_ips,
            f"{precision}_images_per_s": ips,
            "speeds": speeds,
            "n_threads": self.spec["n_threads"],
            "held_out": self.held_out,
        }
