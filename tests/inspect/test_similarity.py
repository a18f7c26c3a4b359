"""Blockwise near-pair search (`featstore.inspect.similarity`) against the plain all-pairs answer."""

from __future__ import annotations

import numpy as np
import pytest

from featstore.inspect import similarity as sim
from featstore.inspect.sets import normalise_rows


def _low_rank(n: int, d: int = 600, rank: int = 12, n_dups: int = 20, seed: int = 0) -> np.ndarray:
    """Non-negative low-rank rows (like pooled CNN features) with planted near duplicates."""
    rng = np.random.default_rng(seed)
    X = np.maximum(rng.normal(size=(n, rank)) @ rng.normal(size=(rank, d)) + rng.normal(0, 0.5, (n, d)), 0)
    src, dst = rng.choice(n, n_dups, replace=False), rng.choice(n, n_dups, replace=False)
    X[dst] = X[src] + rng.normal(0, 0.05, (n_dups, d))
    return normalise_rows(X.astype(np.float32))


def _brute(A, B, threshold) -> set:
    S = A @ (A if B is None else B).T
    if B is None:
        S = np.triu(S, 1)
    return set(zip(*map(np.ndarray.tolist, np.nonzero(S >= threshold)), strict=True))


def _found(A, B, threshold, stats=None) -> set:
    out = set()
    for i, j, s in sim.iter_pairs(A, B, threshold, stats=stats):
        assert np.all(s >= threshold) and s.dtype == np.float32
        out |= set(zip(i.tolist(), j.tolist(), strict=True))
    return out


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 64 x 128 rows and projection planned for any size, so small data crosses many blocks."""
    monkeypatch.setattr(sim, "BLOCK_ROWS", 64)
    monkeypatch.setattr(sim, "BLOCK_COLS", 128)
    monkeypatch.setattr(sim, "MIN_PAIRS_TO_PROJECT", 0)
    monkeypatch.setattr(sim, "SAMPLE_ROWS", 256)
    monkeypatch.setattr(sim, "RANKS", (16, 32))


@pytest.mark.parametrize("threshold", [0.999, 0.97, 0.9, 0.6])
def test_pairs_within_one_set_match_all_pairs(small_blocks, threshold):
    X = _low_rank(700)
    stats = sim.PairStats()
    assert _found(X, None, threshold, stats) == _brute(X, None, threshold)
    assert stats.n_pairs == len(_brute(X, None, threshold))
    assert stats.n_blocks > 10


def test_projection_is_used_and_exact_on_low_rank_rows(small_blocks):
    X = _low_rank(700)
    stats = sim.PairStats()
    assert _found(X, None, 0.97, stats) == _brute(X, None, 0.97)
    assert stats.rank in (16, 32) and stats.estimated_cost < 0.6
    # a low threshold makes most pairs candidates: those blocks are computed in full, same answer
    stats = sim.PairStats()
    assert _found(X, None, 0.05, stats) == _brute(X, None, 0.05)
    assert stats.rank is None or stats.n_full_blocks > 0


def test_pairs_between_two_sets_match_all_pairs(small_blocks):
    X = _low_rank(900, seed=1)
    A, B = X[:300], X[300:]
    for threshold in (0.98, 0.8):
        assert _found(A, B, threshold) == _brute(A, B, threshold)


def test_full_dimension_path_without_projection():
    rng = np.random.default_rng(3)
    X = normalise_rows(rng.normal(size=(300, 40)).astype(np.float32))
    X[7] = X[200]
    stats = sim.PairStats()
    assert _found(X, None, 0.999, stats) == {(7, 200)}
    assert stats.rank is None  # few pairs: no sample, no projection


def test_zero_rows_match_nothing_and_threshold_one_keeps_identical_rows(small_blocks):
    X = _low_rank(300)
    X[5] = 0
    X[10] = X[20]
    pairs = _found(X, None, 1.0)
    assert (10, 20) in pairs and not any(5 in p for p in pairs)


def test_nearest_keeps_the_most_similar_partner_and_counts_matches():
    nearest = sim.Nearest.empty(4)
    nearest.update(np.array([0, 0, 2]), np.array([1, 3, 1]), np.array([0.96, 0.99, 0.97], np.float32))
    nearest.update(np.array([0]), np.array([2]), np.array([0.98], np.float32))
    assert nearest.index.tolist() == [3, -1, 1, -1]
    assert nearest.similarity[0] == pytest.approx(0.99)
    assert nearest.n_matches.tolist() == [3, 0, 1, 0]


def test_components_merge_batches_of_edges():
    comps = sim.Components(8)
    comps.add(np.array([0, 2]), np.array([1, 3]))
    comps.add(np.array([1, 6]), np.array([2, 7]))
    comps.add(np.array([3]), np.array([0]))  # inside one component already
    assert [g.tolist() for g in comps.groups()] == [[0, 1, 2, 3], [6, 7]]
    assert [g.tolist() for g in comps.groups(min_size=3)] == [[0, 1, 2, 3]]
