"""Splits of labelled rows: stored parts (re-mapped when there is no test part), stratified,
and hash splits from content digests that never move an image when others are added."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from featstore.data.options import ShotOptions, SplitOptions, parse_shots
from featstore.data.splits import check_shots, hash_positions, make_split, sample_shots, split_from_digests
from featstore.errors import DatasetError, InvalidOptionError

CLASSES = ["ant", "bee", "cow"]


def _digests(n: int, start: int = 0) -> list[str]:
    """Content digests like the store's: SHA-256 of distinct image bytes."""
    return [hashlib.sha256(f"image {i}".encode()).hexdigest() for i in range(start, start + n)]


def _labels(n_per_class: int, n_classes: int = 3) -> np.ndarray:
    return np.repeat(np.arange(n_classes), n_per_class)


def _parts(split) -> tuple[int, int, int]:
    return len(split.train), len(split.val), len(split.test)


def test_train_and_val_without_test_uses_val_as_the_test_set():
    labels = _labels(40)  # 30 train + 10 val per class
    stored = np.array((["train"] * 30 + ["val"] * 10) * 3)
    split = make_split(labels, stored, CLASSES, SplitOptions(val_size=0.1, seed=0))
    assert split.source == "stored" and _parts(split) == (81, 9, 30)
    assert set(split.test) == set(np.flatnonzero(stored == "val"))
    assert set(split.train) | set(split.val) == set(np.flatnonzero(stored == "train"))
    assert sorted(np.bincount(labels[split.val])) == [3, 3, 3]  # stratified
    assert split.note == (
        "no test split: val (30 images) is the held-out test set; "
        "validation (9 images, 10 % of train) carved from train"
    )
    d = split.describe()
    assert d["note"] == split.note and (d["source"], d["n_test"], d["n_val"]) == ("stored", 30, 9)
    again = make_split(labels, stored, CLASSES, SplitOptions(val_size=0.1, seed=0))
    assert list(again.val) == list(split.val)
    none = make_split(labels, stored, CLASSES, SplitOptions(val_size=0.0))
    assert _parts(none) == (90, 0, 30) and none.note.endswith("no validation part (--val-size 0)")


def test_train_and_test_without_val_carves_validation_from_train():
    labels = _labels(40)
    stored = np.array((["train"] * 30 + ["test"] * 10) * 3)
    split = make_split(labels, stored, CLASSES, SplitOptions(val_size=0.2))
    assert _parts(split) == (72, 18, 30)
    assert split.note == "no val split: validation (18 images, 20 % of train) carved from train"
    full = np.array((["train"] * 28 + ["val"] * 2 + ["test"] * 10) * 3)
    assert make_split(labels, full, CLASSES).note == ""


@pytest.mark.parametrize(
    "parts,message",
    [
        (
            ("val", "test"),
            r"the stored split has no train part, only val \(60 images\) and test \(60 images\); ",
        ),
        (("test", "test"), r"no train part, only test \(120 images\);.* pass --split stratified"),
        (("train", "train"), r"the stored split has only a train part \(120 images\).*--split stratified"),
    ],
)
def test_a_stored_split_that_cannot_be_used_says_what_to_do(parts, message):
    labels = _labels(40)
    stored = np.array(([parts[0]] * 20 + [parts[1]] * 20) * 3)
    with pytest.raises(DatasetError, match=message):
        make_split(labels, stored, CLASSES)
    assert _parts(make_split(labels, stored, CLASSES, SplitOptions("stratified"))) == (84, 12, 24)


def test_split_choices():
    labels = _labels(30)
    stored = np.array((["train"] * 20 + ["test"] * 10) * 3)
    assert make_split(labels, stored, CLASSES).source == "stored"
    strat = make_split(labels, stored, CLASSES, SplitOptions("stratified"))
    assert strat.source == "stratified" and _parts(strat) == (63, 9, 18)
    assert make_split(labels, [""] * 90, CLASSES).source == "stratified"
    with pytest.raises(DatasetError, match="--split stored: these images have no stored split"):
        make_split(labels, [""] * 90, CLASSES, SplitOptions("stored"))
    with pytest.raises(
        InvalidOptionError, match="^split: must be one of stored, stratified, hash, not 'random'"
    ):
        make_split(labels, stored, CLASSES, SplitOptions("random"))
    with pytest.raises(
        InvalidOptionError, match=r"^test_size: and val_size must sum below 1, not 0.6 \+ 0.4"
    ):
        make_split(labels, stored, CLASSES, SplitOptions(test_size=0.6, val_size=0.4))


def test_stratified_and_hash_give_the_documented_sizes():
    labels = _labels(1000)
    strat = make_split(labels, [""] * 3000, CLASSES, SplitOptions(test_size=0.2, val_size=0.1))
    assert _parts(strat) == (2100, 300, 600)
    hashed = make_split(
        labels,
        [""] * 3000,
        CLASSES,
        SplitOptions("hash", test_size=0.2, val_size=0.1),
        digests=_digests(3000),
    )
    n_train, n_val, n_test = _parts(hashed)
    assert hashed.source == "hash" and n_train + n_val + n_test == 3000
    assert abs(n_test / 3000 - 0.2) < 0.03 and abs(n_val / 3000 - 0.1) < 0.03
    assert hashed.describe()["seed"] is None and hashed.note == ""


def test_hash_split_never_moves_an_image_when_images_are_added():
    rng = np.random.default_rng(0)
    old_digests, old_labels = _digests(300), rng.integers(0, 3, 300)
    new_digests = old_digests + _digests(500, start=300)
    new_labels = np.concatenate([old_labels, rng.integers(0, 3, 500)])
    order = rng.permutation(800)  # another scan order, too
    new_digests, new_labels = [new_digests[i] for i in order], new_labels[order]

    def part_of(digests, labels, seed=0):
        options = SplitOptions("hash", seed=seed)
        split = make_split(labels, [""] * len(labels), CLASSES, options, digests=digests)
        return {digests[i]: name for name in ("train", "val", "test") for i in getattr(split, name)}

    before, after = part_of(old_digests, old_labels), part_of(new_digests, new_labels, seed=7)
    assert len(before) == 300 and all(after[d] == part for d, part in before.items())
    # a stored split is ignored, and the position depends on the digest only
    stored = ["test"] * 300
    assert part_of(old_digests, old_labels) == before
    split = make_split(old_labels, stored, CLASSES, SplitOptions("hash"), digests=old_digests)
    assert split.source == "hash"
    pos = hash_positions(old_digests)
    assert ((pos >= 0) & (pos < 1)).all() and list(hash_positions(old_digests[:5])) == list(pos[:5])


def test_hash_split_checks_every_class_is_trained_and_test_is_not_empty():
    digests = _digests(200)
    pos = hash_positions(digests)
    labels = np.repeat([0, 1], 100)
    lone = int(np.argmax(pos < 0.2))  # an image that lands in test
    labels3 = labels.copy()
    labels3[lone] = 2  # the only image of class "cow"
    with pytest.raises(
        DatasetError, match="class 'cow' has no training image in the hash split .*--split stratified"
    ):
        make_split(labels3, [""] * 200, CLASSES, SplitOptions("hash"), digests=digests)
    train_only = [i for i in range(100) if pos[i] >= 0.3][:3] + [i for i in range(100, 200) if pos[i] >= 0.3][
        :3
    ]
    with pytest.raises(
        DatasetError, match="the test split is empty; .*add images, or use --split stratified"
    ):
        make_split(
            labels[train_only],
            [""] * 6,
            CLASSES,
            SplitOptions("hash"),
            digests=[digests[i] for i in train_only],
        )


def test_every_class_needs_a_training_image_in_a_stored_split():
    labels = _labels(10)
    stored = np.array(["train"] * 20 + ["test"] * 10)  # class cow only in test
    with pytest.raises(DatasetError, match="class 'cow' has no training image in the stored split"):
        make_split(labels, stored, CLASSES)


def test_k_shot_draws_repeat_by_their_seed_and_keep_the_test_part():
    labels = np.concatenate([_labels(20), [2, 2, 2]])  # cow has 3 more images
    split = make_split(labels, [""] * len(labels), CLASSES, SplitOptions(test_size=0.25, val_size=0.25))
    draw = sample_shots(split, labels, 4, seed=7, class_names=CLASSES)
    assert np.bincount(labels[draw.train]).tolist() == [4, 4, 4] and set(draw.train) <= set(split.train)
    assert np.bincount(labels[draw.val]).tolist() == [4, 4, 4] and set(draw.val) <= set(split.val)
    assert np.array_equal(draw.test, split.test) and draw.seed == 7
    assert (
        draw.note
        == "4-shot draw (seed 7): 4 training image(s) per class, validation cut to at most 4 per class"
    )
    again = sample_shots(split, labels, 4, seed=7, class_names=CLASSES)
    assert np.array_equal(again.train, draw.train) and np.array_equal(again.val, draw.val)
    other = sample_shots(split, labels, 4, seed=8, class_names=CLASSES)
    assert not np.array_equal(other.train, draw.train)
    kept = sample_shots(split, labels, 2, seed=7, cut_val=False, class_names=CLASSES)
    assert np.array_equal(kept.val, split.val) and len(kept.train) == 6
    many = sample_shots(split, labels, 10, seed=0, class_names=CLASSES)  # val has fewer: all of it
    assert np.array_equal(many.val, split.val)


def test_shots_larger_than_the_smallest_class_are_refused():
    labels = np.concatenate([_labels(10), [2] * 10])
    split = make_split(labels, [""] * len(labels), CLASSES, SplitOptions(test_size=0.2, val_size=0.2))
    fewest = int(np.bincount(labels[split.train]).min())
    check_shots(split, labels, CLASSES, [1, fewest])
    with pytest.raises(
        DatasetError,
        match=rf"^--shots {fewest + 1} is more than the {fewest} training image\(s\) of class '(ant|bee)'; use shots of at most {fewest}$",
    ):
        check_shots(split, labels, CLASSES, [1, fewest + 1])
    with pytest.raises(DatasetError, match="is more than the"):
        sample_shots(split, labels, fewest + 1, seed=0, class_names=CLASSES)


def test_shot_options_and_parsing():
    assert ShotOptions((5, 1), 3).seeds(10) == [10, 11, 12] and ShotOptions(2).shots == (2,)
    assert parse_shots("10, 1,2") == (1, 2, 10)
    for bad, param in (({"shots": (0,)}, "shots"), ({"shots": (1, 1)}, "shots"), ({"repeats": 0}, "repeats")):
        with pytest.raises(InvalidOptionError) as err:
            ShotOptions(**bad).check()
        assert err.value.param == param
    with pytest.raises(InvalidOptionError, match="^shots: must be a comma-separated list of whole numbers"):
        parse_shots("1,two")


def test_a_recorded_split_is_rebuilt_from_its_digests():
    digests = _digests(12)
    labels = _labels(4)
    split = make_split(labels, [""] * 12, CLASSES, SplitOptions(test_size=0.25, val_size=0.25))
    parts = {p: [digests[i] for i in getattr(split, p)] for p in ("train", "val", "test")}
    order = np.random.default_rng(0).permutation(12)
    moved = split_from_digests(parts, [digests[i] for i in order], split.describe())
    for p in ("train", "val", "test"):
        assert sorted(order[getattr(moved, p)]) == sorted(getattr(split, p))
    assert moved.describe() == split.describe()
    with pytest.raises(
        DatasetError, match=r"^1 test image\(s\) of the recorded split are no longer in the features"
    ):
        split_from_digests(parts, [d for d in digests if d != parts["test"][0]], split.describe())
