"""Train/validation/test splits of a feature set's rows: the stored split, or a stratified one.

Imports scikit-learn, numpy and `errors` only. A split is recorded as the content digests of
its rows, so a head can be re-evaluated on exactly the same images later.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from featstore.errors import DatasetError


@dataclass
class Split:
    """Row indices of each part, and how they were chosen."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    source: str
    test_size: float | None = None
    val_size: float | None = None
    seed: int | None = None

    def describe(self) -> dict:
        """Return a JSON-ready summary (sizes and how the split was made)."""
        d = {k: v for k, v in asdict(self).items() if k not in ("train", "val", "test")}
        d.update(n_train=len(self.train), n_val=len(self.val), n_test=len(self.test))
        return d


def _check_fractions(test_size: float, val_size: float) -> None:
    if not (0 <= test_size < 1 and 0 <= val_size < 1 and test_size + val_size < 1):
        raise DatasetError(
            f"--test-size ({test_size}) and --val-size ({val_size}) must be fractions in [0, 1) "
            "with a sum below 1"
        )


def _check_classes(labels: np.ndarray, class_names: list[str], need: int) -> None:
    present = np.unique(labels)
    if len(present) < 2:
        only = class_names[int(present[0])] if len(present) else "(none)"
        raise DatasetError(f"a head needs at least 2 classes with images; this feature set has only {only!r}")
    counts = np.bincount(labels, minlength=len(class_names))
    few = [class_names[i] for i in present if counts[i] < need]
    if few:
        raise DatasetError(
            f"class {few[0]!r} has {counts[class_names.index(few[0])]} image(s); a stratified "
            f"split needs at least {need} per class (add images, or lower --test-size/--val-size)"
        )


def _stratified(idx: np.ndarray, size: float, labels: np.ndarray, seed: int, part: str, option: str):
    """Stratified split of row indices `idx`: (rest, part) with `size` the fraction in `part`."""
    from sklearn.model_selection import train_test_split

    try:
        return train_test_split(idx, test_size=size, stratify=labels[idx], random_state=seed)
    except ValueError as err:
        n_classes = len(np.unique(labels[idx]))
        raise DatasetError(
            f"a stratified {part} split of {len(idx)} images needs at least one image of each of the "
            f"{n_classes} classes on each side ({err}); add images or change {option}"
        ) from None


def make_split(
    labels: np.ndarray,
    stored: list[str],
    class_names: list[str],
    test_size: float = 0.2,
    val_size: float = 0.1,
    seed: int = 0,
) -> Split:
    """Split labelled rows into train, validation and test.

    The split stored with the features (train/val/test folders) is used when present (a
    missing validation part is carved from train with `val_size`); otherwise a stratified
    split with `test_size` and `val_size` (fractions of all rows) and `seed`. Rows with
    label -1 are left out.

    Raises
    ------
    DatasetError
        Fewer than 2 classes, too few images per class, bad fractions, or an empty part.
    """
    _check_fractions(test_size, val_size)
    labels = np.asarray(labels)
    idx = np.flatnonzero(labels >= 0)
    stored_arr = np.asarray(stored, dtype=object)
    if any(stored_arr[idx]):
        parts = {name: idx[stored_arr[idx] == name] for name in ("train", "val", "test")}
        train, val, test = parts["train"], parts["val"], parts["test"]
        if not len(val) and val_size > 0 and len(train):
            _check_classes(labels[train], class_names, 2)
            train, val = _stratified(train, val_size, labels, seed, "validation", "--val-size")
        split = Split(np.sort(train), np.sort(val), np.sort(test), "stored", None, val_size, seed)
    else:
        need = 1 + (test_size > 0) + (val_size > 0)
        _check_classes(labels[idx], class_names, need)
        train, test = idx, idx[:0]
        if test_size > 0:
            train, test = _stratified(idx, test_size, labels, seed, "test", "--test-size")
        val = idx[:0]
        if val_size > 0:
            frac = val_size / (1 - test_size)
            train, val = _stratified(train, frac, labels, seed, "validation", "--val-size")
        split = Split(np.sort(train), np.sort(val), np.sort(test), "stratified", test_size, val_size, seed)
    for name in ("train",) + (("test",) if test_size > 0 or split.source == "stored" else ()):
        if not len(getattr(split, name)):
            raise DatasetError(f"the {name} split is empty; a head needs images to {name} on")
    _check_classes(labels[split.train], class_names, 1)
    return split
