"""Train/validation/test splits of a feature set's rows: stored, stratified or hashed from each
image's content digest; k-shot draws; a split recorded as digests and rebuilt from them."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from featstore.data.options import SplitOptions
from featstore.errors import DatasetError


@dataclass
class Split:
    """Row indices of each part, how they were chosen, and a one-line `note` when the stored
    parts were re-mapped (e.g. val used as the test part); empty otherwise."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    source: str
    test_size: float | None = None
    val_size: float | None = None
    seed: int | None = None
    note: str = ""

    def describe(self) -> dict:
        """Return a JSON-ready summary: source, fractions, seed, note and the size of each part."""
        d = {k: v for k, v in asdict(self).items() if k not in ("train", "val", "test")}
        d.update(n_train=len(self.train), n_val=len(self.val), n_test=len(self.test))
        return d


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


def resolve_source(split: str, stored: Sequence[str]) -> str:
    """The source (stored, stratified or hash) a `--split` choice means for rows whose stored parts
    are `stored`; InvalidOptionError for an unknown choice, DatasetError for `stored` without one."""
    SplitOptions(split=split).check()
    has_stored = any(stored)
    if split == "auto":
        return "stored" if has_stored else "stratified"
    if split == "stored" and not has_stored:
        raise DatasetError(
            "--split stored: these images have no stored split (no train/val/test folders or manifest "
            "split column); use --split stratified or --split hash"
        )
    return split


def hash_positions(digests: Sequence[str]) -> np.ndarray:
    """Each content digest's stable position in [0, 1), (n,) float64: the first 64 bits of its
    SHA-256, so other images never move it."""
    return np.array(
        [int(hashlib.sha256(d.encode()).hexdigest()[:16], 16) / 2**64 for d in digests], dtype=np.float64
    )


def _percent(fraction: float) -> str:
    return f"{100 * fraction:g} %"


def _stored_split(
    idx: np.ndarray,
    stored: np.ndarray,
    labels: np.ndarray,
    class_names: list[str],
    val_size: float,
    seed: int,
) -> Split:
    parts = {name: idx[stored[idx] == name] for name in ("train", "val", "test")}
    train, val, test = parts["train"], parts["val"], parts["test"]
    have = [f"{name} ({len(rows)} images)" for name, rows in parts.items() if len(rows)]
    if not len(train):
        raise DatasetError(
            f"the stored split has no train part, only {' and '.join(have)}; name a folder train/ "
            "(or add a train split to the manifest), or pass --split stratified to split every image anew"
        )
    if not len(val) and not len(test):
        raise DatasetError(
            f"the stored split has only a train part ({len(train)} images), nothing to test on; add a "
            "val/ or test/ folder, or pass --split stratified to carve validation and test from it"
        )
    note = ""
    if not len(test):  # train + val: val is the held-out test set, validation comes from train
        test, val = val, idx[:0]
        if val_size > 0:
            _check_classes(labels[train], class_names, 2)
            train, val = _stratified(train, val_size, labels, seed, "validation", "--val-size")
        carved = (
            f"validation ({len(val)} images, {_percent(val_size)} of train) carved from train"
            if val_size > 0
            else "no validation part (--val-size 0)"
        )
        note = f"no test split: val ({len(test)} images) is the held-out test set; {carved}"
    elif not len(val) and val_size > 0:
        _check_classes(labels[train], class_names, 2)
        train, val = _stratified(train, val_size, labels, seed, "validation", "--val-size")
        note = (
            f"no val split: validation ({len(val)} images, {_percent(val_size)} of train) carved from train"
        )
    return Split(np.sort(train), np.sort(val), np.sort(test), "stored", None, val_size, seed, note)


def _stratified_split(
    idx: np.ndarray, labels: np.ndarray, class_names: list[str], test_size: float, val_size: float, seed: int
) -> Split:
    need = 1 + (test_size > 0) + (val_size > 0)
    _check_classes(labels[idx], class_names, need)
    train, test = idx, idx[:0]
    if test_size > 0:
        train, test = _stratified(idx, test_size, labels, seed, "test", "--test-size")
    val = idx[:0]
    if val_size > 0:
        frac = val_size / (1 - test_size)
        train, val = _stratified(train, frac, labels, seed, "validation", "--val-size")
    return Split(np.sort(train), np.sort(val), np.sort(test), "stratified", test_size, val_size, seed)


def _hash_split(idx: np.ndarray, digests: Sequence[str], test_size: float, val_size: float) -> Split:
    pos = hash_positions([digests[i] for i in idx])
    test = idx[pos < test_size]
    val = idx[(pos >= test_size) & (pos < test_size + val_size)]
    train = idx[pos >= test_size + val_size]
    return Split(train, val, test, "hash", test_size, val_size, None)


def make_split(
    labels: np.ndarray,
    stored: Sequence[str],
    class_names: list[str],
    options: SplitOptions = SplitOptions(),
    digests: Sequence[str] | None = None,
) -> Split:
    """Split labelled rows into train, validation and test; rows with label -1 are left out.

    `labels` (n,) int, `stored` (n,) part names and `digests` (for `hash`) are row-aligned.
    `options.split`: `stored` (a missing validation part is carved from train; with train and
    val only, val is the test part, and `Split.note` says so), `stratified` (`test_size`,
    `val_size`, `seed`), `hash` (each row's part from its digest: adding images never moves
    one), or `auto` (stored when there is one, else stratified).

    InvalidOptionError for bad options; DatasetError for a split the rows cannot make.
    """
    options = options.check()
    labels = np.asarray(labels)
    idx = np.flatnonzero(labels >= 0)
    stored_arr = np.asarray(stored, dtype=object)
    source = resolve_source(options.split, list(stored_arr[idx]))
    test_size, val_size, seed = options.test_size, options.val_size, options.seed
    if source == "stored":
        split = _stored_split(idx, stored_arr, labels, class_names, val_size, seed)
    elif source == "hash":
        if digests is None:
            raise ValueError("a hash split needs the content digest of every row")
        _check_classes(labels[idx], class_names, 1)
        split = _hash_split(idx, digests, test_size, val_size)
    else:
        split = _stratified_split(idx, labels, class_names, test_size, val_size, seed)
    _check_parts(split, labels, idx, class_names, test_size)
    return split


def _check_parts(
    split: Split, labels: np.ndarray, idx: np.ndarray, class_names: list[str], test_size
) -> None:
    """Raise DatasetError when train (or an asked-for test part) is empty or a class has no
    training image."""
    source = split.source
    hint = "; add images, or use --split stratified" if source == "hash" else ""
    for name in ("train",) + (("test",) if test_size > 0 or source == "stored" else ()):
        if not len(getattr(split, name)):
            raise DatasetError(f"the {name} split is empty; a head needs images to {name} on{hint}")
    missing = sorted(set(np.unique(labels[idx]).tolist()) - set(np.unique(labels[split.train]).tolist()))
    if missing:
        n = int((labels[idx] == missing[0]).sum())
        raise DatasetError(
            f"class {class_names[missing[0]]!r} has no training image in the {source} split "
            f"({n} image(s) in all, none in train); add images"
            + (", or use --split stratified" if source != "stratified" else "")
        )
    _check_classes(labels[split.train], class_names, 1)


# ---------------------------------------------------------------- k-shot samples


def check_shots(split: Split, labels: np.ndarray, class_names: list[str], shots: Sequence[int]) -> None:
    """Raise DatasetError naming the smallest class when the largest of `shots` exceeds its
    training images."""
    if not len(shots):
        return
    present = np.unique(labels[split.train])
    counts = np.bincount(labels[split.train], minlength=len(class_names))[present]
    fewest = int(counts.min())
    if max(shots) > fewest:
        small = class_names[int(present[int(np.argmin(counts))])]
        raise DatasetError(
            f"--shots {max(shots)} is more than the {fewest} training image(s) of class {small!r}; "
            f"use shots of at most {fewest}"
        )


def _per_class(rows: np.ndarray, labels: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """At most `k` rows of each class of `rows`, drawn without replacement by `rng`, sorted."""
    picked = []
    for c in np.unique(labels[rows]):
        mine = rows[labels[rows] == c]
        picked.append(mine if len(mine) <= k else rng.choice(mine, size=k, replace=False))
    return np.sort(np.concatenate(picked)) if picked else rows[:0]


def sample_shots(
    split: Split,
    labels: np.ndarray,
    shots: int,
    seed: int,
    cut_val: bool = True,
    class_names: list[str] | None = None,
) -> Split:
    """A k-shot version of `split`: `shots` training images per class drawn with `seed`, the
    validation part cut likewise (with `cut_val`), the test part whole."""
    labels = np.asarray(labels)
    names = class_names or [str(c) for c in range(int(labels.max()) + 1)]
    check_shots(split, labels, names, [shots])
    rng = np.random.default_rng(seed)
    train = _per_class(split.train, labels, shots, rng)
    val = _per_class(split.val, labels, shots, rng) if cut_val else split.val
    note = f"{shots}-shot draw (seed {seed}): {shots} training image(s) per class" + (
        f", validation cut to at most {shots} per class" if cut_val else ""
    )
    return Split(train, val, split.test, split.source, split.test_size, split.val_size, seed, note)


def split_from_digests(parts: dict[str, Sequence[str]], digests: Sequence[str], described: dict) -> Split:
    """Rebuild a recorded split (`parts`: part -> content digests) on rows of `digests`;
    DatasetError when a recorded image is no longer among them."""
    where = {d: i for i, d in enumerate(digests)}
    idx = {}
    for part in ("train", "val", "test"):
        wanted = list(parts.get(part) or [])
        missing = [d for d in wanted if d not in where]
        if missing:
            raise DatasetError(
                f"{len(missing)} {part} image(s) of the recorded split are no longer in the features "
                f"(e.g. digest {missing[0][:12]}); fit the heads again on the features as they are now"
            )
        idx[part] = np.sort(np.array([where[d] for d in wanted], dtype=int))
    return Split(
        idx["train"],
        idx["val"],
        idx["test"],
        described.get("source", "stored"),
        described.get("test_size"),
        described.get("val_size"),
        described.get("seed"),
        described.get("note", ""),
    )
