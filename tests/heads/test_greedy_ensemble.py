"""A sweep's ensemble: greedy selection with replacement on held-out probabilities, saved with
its weights, and chosen over the best single setting only when the gain, itself cross-checked,
is beyond noise."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import blobs, write_synthetic_set

from featstore import Store
from featstore.heads.selection import greedy, select_ensemble
from featstore.store.head_files import load_head, read_meta


def _held(rng, y, n_classes: int, wrong: np.ndarray) -> np.ndarray:
    """(1, n, classes) probabilities: 0.6 on the label, or on another class where `wrong`."""
    proba = np.full((len(y), n_classes), 0.4 / (n_classes - 1))
    shown = np.where(wrong, (y + rng.integers(1, n_classes, len(y))) % n_classes, y)
    proba[np.arange(len(y)), shown] = 0.6
    return proba[None].astype(np.float32)


def test_members_that_err_apart_are_chosen_and_copies_of_one_are_not():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 100)
    groups = np.arange(300) % 5
    apart = np.stack([_held(rng, y, 3, rng.random(300) < 0.3) for _ in range(3)])
    choice = select_ensemble(apart, y, groups, rounds=6)
    assert len(choice.members) == 3 and abs(sum(choice.weights) - 1) < 1e-9
    assert choice.preferred and choice.gain > 2 * choice.se > 0
    assert "beyond noise: the ensemble is chosen" in choice.reason(["a", "b", "c"], "a")
    same = np.stack([apart[0], apart[0], apart[0] * 0.999 + 0.001 / 3])
    copies = select_ensemble(same, y, groups, rounds=6)
    assert not copies.preferred and copies.gain == 0.0
    assert greedy(apart, y, rounds=1).sum() == 1  # one round: the best single setting


@pytest.fixture(scope="module")
def noisy_store(tmp_path_factory):
    """Blobs drowned in noise: no setting is right everywhere, and none errs apart from the rest."""
    root = tmp_path_factory.mktemp("greedy") / "store"
    X, y = blobs(n_per_class=60, seed=1)
    X += np.random.default_rng(1).normal(0, 6, X.shape).astype(np.float32)
    write_synthetic_set(root, "bugs@tiny", X, y, ["ant", "bee", "cow"])
    return root


def test_an_ensemble_within_noise_is_saved_but_not_chosen(noisy_store):
    grid = {"logistic": {"C": [0.01, 1.0]}, "knn": {"k": [1, 5, 20]}, "svm": {"C": [1.0]}}
    r = Store(noisy_store).sweep("bugs@tiny", grid=grid, select="cv", ensemble=4, name="g", emissions=False)
    assert r.heads[0].kind != "ensemble" and r.best_head_id == r.heads[0].head_id
    ens = next(h for h in r.heads if h.kind == "ensemble")
    row = next(row for row in r.rows if row["kind"] == "ensemble")
    assert row["chosen"] == "not chosen: within noise" and row["setting"].startswith("greedy: ")
    estimator, meta = load_head(Store(noisy_store).layout, ens.head_id)
    record = meta["sweep"]["ensemble"]
    assert record["preferred"] is False and record["gain"] <= 2 * record["se"]
    assert record["weights"] == pytest.approx(list(estimator.weights_)) and sum(
        record["weights"]
    ) == pytest.approx(1)
    assert record["members"] == meta["members"] and len(set(meta["members"])) == len(meta["members"]) >= 2
    assert any("within noise: the single head is chosen" in n for n in r.notes)
    table = json.loads(open(r.path).read())
    assert table["select"] == "cv" and table["rows"][-1]["chosen"] == "not chosen: within noise"
    assert read_meta(Store(noisy_store).layout, r.best_head_id)["sweep"]["chosen"] == "best"
