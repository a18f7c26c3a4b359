"""Every pair of unit vectors whose cosine similarity reaches a threshold, exactly, block by block
in bounded memory.

With low-rank rows (CNN features) the rows are first compared in a rank-k projection: for unit
x, y with residual norms r(x), r(y),

    cos(x, y) <= p(x).p(y) + r(x) r(y)        (Cauchy-Schwarz)

so only pairs whose bound reaches the threshold are checked in full. The projection is used
only when a sample says it saves time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

#: Query rows and key rows per block (a block of similarities is 16 MiB of float32).
BLOCK_ROWS = 1024
BLOCK_COLS = 4096
#: Projection ranks tried, and the rows of the sample that chooses one.
RANKS = (128, 256)
SAMPLE_ROWS = 2048
#: Checking one candidate pair costs about this many times one dot product inside a matrix
#: product (gather, then a short dot product in numpy).
CANDIDATE_COST = 24.0
#: Use a projection only when the sample says it costs at most this fraction of the plain way.
MAX_RELATIVE_COST = 0.6
#: Below this many pairs the plain way is fast enough that planning a projection does not pay.
MIN_PAIRS_TO_PROJECT = 2e7
#: Slack for float32 rounding in the projected comparison.
EPS = 1e-4
#: Candidates checked per gather (bounds the gathered rows to a few tens of MiB).
GATHER = 8192

Pairs = tuple[np.ndarray, np.ndarray, np.ndarray]
Progress = Callable[..., None]


@dataclass
class PairStats:
    """How a search went: pairs found, the projection's rank (if any), blocks computed in full,
    candidates checked, and the sample's estimated cost against the plain way."""

    n_pairs: int = 0
    rank: int | None = None
    n_blocks: int = 0
    n_full_blocks: int = 0
    n_candidates: int = 0
    estimated_cost: float | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """Return a JSON-ready dict."""
        return {
            "n_pairs": self.n_pairs,
            "projected_rank": self.rank,
            "n_blocks": self.n_blocks,
            "n_full_blocks": self.n_full_blocks,
            "n_candidates": self.n_candidates,
            "estimated_cost": self.estimated_cost,
        }


@dataclass
class _Projection:
    """Rows projected on a rank-k basis, sorted by residual norm: `Z` (n, k) float32, `r` (n,)
    residual norms and `order` (n,) the original row of each position."""

    Z: np.ndarray
    r: np.ndarray
    order: np.ndarray


def _sample(X: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
    return X if len(X) <= m else X[np.sort(rng.choice(len(X), m, replace=False))]


def _basis(S: np.ndarray, k: int) -> np.ndarray:
    """(d, k) orthonormal basis of the top-k right singular vectors of sample `S` (float64)."""
    S = S.astype(np.float64)
    _, vectors = np.linalg.eigh(S.T @ S)
    return np.ascontiguousarray(vectors[:, ::-1][:, :k], dtype=np.float32)


def _project(X: np.ndarray, V: np.ndarray, chunk_rows: int = 8192) -> _Projection:
    """Project rows of X on basis V, in order of their residual norm."""
    energy = np.empty(len(X), np.float64)
    for start in range(0, len(X), chunk_rows):
        z = X[start : start + chunk_rows] @ V
        energy[start : start + len(z)] = np.einsum("ij,ij->i", z, z, dtype=np.float64)
    norms = np.einsum("ij,ij->i", X, X, dtype=np.float64)
    r = np.sqrt(np.clip(norms - energy, 0, None)).astype(np.float32)
    order = np.argsort(r, kind="stable")
    Z = np.empty((len(X), V.shape[1]), np.float32)
    for start in range(0, len(X), chunk_rows):
        Z[start : start + chunk_rows] = X[order[start : start + chunk_rows]] @ V
    return _Projection(Z, r[order], order)


def _plan(A: np.ndarray, B: np.ndarray | None, threshold: float, seed: int, stats: PairStats):
    """The rank-k basis to compare in (None: compare in full), chosen on a sample."""
    d = A.shape[1]
    n_pairs = len(A) * (len(A) - 1) / 2 if B is None else len(A) * len(B)
    ranks = [k for k in RANKS if 2 * k <= d]
    if n_pairs < MIN_PAIRS_TO_PROJECT or not ranks or threshold <= 0:
        return None
    rng = np.random.default_rng(seed)
    S = (
        _sample(A, SAMPLE_ROWS, rng)
        if B is None
        else np.vstack([_sample(A, SAMPLE_ROWS // 2, rng), _sample(B, SAMPLE_ROWS // 2, rng)])
    )
    V = _basis(S, max(ranks))
    iu = np.triu_indices(len(S), 1)
    best, best_cost = None, MAX_RELATIVE_COST
    for k in ranks:
        p = _project(S, V[:, :k])
        low = (p.Z @ p.Z.T)[iu]
        bound = low + np.outer(p.r, p.r)[iu]
        frac = float(np.mean(bound >= threshold - EPS))
        cost = k / d + CANDIDATE_COST * frac
        if cost < best_cost:
            best, best_cost = k, cost
    stats.estimated_cost = round(best_cost, 4) if best is not None else None
    return None if best is None else V[:, :best]


def iter_pairs(
    A: np.ndarray,
    B: np.ndarray | None = None,
    threshold: float = 0.95,
    *,
    seed: int = 0,
    progress: Progress | None = None,
    stats: PairStats | None = None,
) -> Iterator[Pairs]:
    """Yield, block by block, the pairs of rows whose dot product is at least `threshold`.

    `A` (n_a, d) and `B` (n_b, d) are float32 unit rows (zero rows match nothing); with `B`
    None, pairs within `A`, each once (i < j). `seed` seeds the sample that decides on a
    projection; `progress(done_rows, n_a, "compare")` is called per band; `stats` is filled in.

    Yields
    ------
    (i, j, s)
        (m,) int64 rows of A and of B (or A), (m,) float32 similarities, exact.
    """
    stats = stats if stats is not None else PairStats()
    V = _plan(A, B, threshold, seed, stats)
    stats.rank = None if V is None else V.shape[1]
    pa = pb = None
    if V is not None:
        pa = _project(A, V)
        pb = pa if B is None else _project(B, V)
    Bx = A if B is None else B
    n_a, n_b = len(A), len(Bx)
    for i0 in range(0, n_a, BLOCK_ROWS):
        i1 = min(i0 + BLOCK_ROWS, n_a)
        for j0 in range(i0 if B is None else 0, n_b, BLOCK_COLS):
            j1 = min(j0 + BLOCK_COLS, n_b)
            stats.n_blocks += 1
            if V is None:
                found = _full_block(A, Bx, np.arange(i0, i1), np.arange(j0, j1), threshold, B is None)
            else:
                found = _projected_block(A, Bx, pa, pb, (i0, i1, j0, j1), threshold, B is None, stats)
            if len(found[0]):
                stats.n_pairs += len(found[0])
                yield found
        if progress is not None:
            progress(i1, n_a, "compare")


def _full_block(A, B, rows: np.ndarray, cols: np.ndarray, threshold: float, upper: bool) -> Pairs:
    """Pairs of rows `rows` x `cols` at or above `threshold`, in full (`upper`: row < col only)."""
    S = take_rows(A, rows) @ take_rows(B, cols).T
    ii, jj = _at_least(S, np.full(len(rows), threshold, S.dtype))
    if upper:
        keep = rows[ii] < cols[jj]
        ii, jj = ii[keep], jj[keep]
    return rows[ii], cols[jj], S[ii, jj]


def _at_least(S: np.ndarray, limit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions (i, j) where S[i, j] >= limit[i], skipping rows whose maximum falls short first."""
    hit = np.flatnonzero(S.max(axis=1) >= limit) if S.size else np.empty(0, np.int64)
    if not len(hit):
        return hit, hit
    ii, jj = np.nonzero(S[hit] >= limit[hit, None])
    return hit[ii], jj


def take_rows(X: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Rows `idx` of X: a view when they are consecutive, else a gathered copy."""
    if len(idx) and idx[-1] - idx[0] == len(idx) - 1 and bool(np.all(np.diff(idx) == 1)):
        return X[idx[0] : idx[-1] + 1]
    return X[idx]


def _projected_block(A, B, pa: _Projection, pb: _Projection, box, threshold: float, upper: bool, stats):
    """Pairs of sorted positions `box`: compared in the projection, candidates checked in full."""
    i0, i1, j0, j1 = box
    L = pa.Z[i0:i1] @ pb.Z[j0:j1].T
    limit = (threshold - EPS) - pa.r[i0:i1] * pb.r[j0:j1].max()
    ci, cj = _at_least(L, limit.astype(L.dtype))
    del L
    if upper and j0 < i1:  # the block touching the diagonal: sorted position i < j only
        keep = i0 + ci < j0 + cj
        ci, cj = ci[keep], cj[keep]
    rows, cols = pa.order[i0 + ci], pb.order[j0 + cj]
    if upper:  # each unordered pair once, as (smaller, larger) original row
        rows, cols = np.minimum(rows, cols), np.maximum(rows, cols)
    stats.n_candidates += len(ci)
    if len(ci) * CANDIDATE_COST > (i1 - i0) * (j1 - j0):
        stats.n_full_blocks += 1
        full_rows, full_cols = pa.order[i0:i1], pb.order[j0:j1]
        r, c, s = _full_block(A, B, full_rows, full_cols, threshold, False)
        if upper:
            keep = _upper_sorted(r, c, pa, i0, i1, j0)
            r, c, s = r[keep], c[keep], s[keep]
            r, c = np.minimum(r, c), np.maximum(r, c)
        return r, c, s
    return _check(A, B, rows, cols, threshold)


def _upper_sorted(r, c, pa: _Projection, i0: int, i1: int, j0: int) -> np.ndarray:
    """Which pairs of a full block of sorted positions lie above the diagonal in sorted order."""
    if j0 >= i1:
        return np.ones(len(r), bool)
    where = np.empty(len(pa.order), np.int64)
    where[pa.order] = np.arange(len(pa.order))
    return where[r] < where[c]


def _check(A, B, rows: np.ndarray, cols: np.ndarray, threshold: float) -> Pairs:
    """Exact similarities of candidate pairs, GATHER at a time; the pairs that reach `threshold`."""
    keep_r, keep_c, keep_s = [], [], []
    for start in range(0, len(rows), GATHER):
        r, c = rows[start : start + GATHER], cols[start : start + GATHER]
        s = np.einsum("ij,ij->i", A[r], B[c])
        ok = s >= threshold
        keep_r.append(r[ok])
        keep_c.append(c[ok])
        keep_s.append(s[ok])
    if not keep_r:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)
    return np.concatenate(keep_r), np.concatenate(keep_c), np.concatenate(keep_s)


@dataclass
class Nearest:
    """Each row's most similar partner at or above the threshold: `index` (n,) int64 (-1: none),
    `similarity` (n,) float32, and `n_matches` (n,) partners reaching the threshold."""

    index: np.ndarray
    similarity: np.ndarray
    n_matches: np.ndarray

    @classmethod
    def empty(cls, n: int) -> Nearest:
        """No partner for any of `n` rows."""
        return cls(np.full(n, -1, np.int64), np.zeros(n, np.float32), np.zeros(n, np.int64))

    def update(self, i: np.ndarray, j: np.ndarray, s: np.ndarray) -> None:
        """Take pairs (i, j, s) into account (partners of rows i)."""
        if not len(i):
            return
        self.n_matches += np.bincount(i, minlength=len(self.index))
        order = np.lexsort((-s, i))
        i, j, s = i[order], j[order], s[order]
        first = np.r_[True, i[1:] != i[:-1]]
        i, j, s = i[first], j[first], s[first]
        better = s > self.similarity[i]
        self.index[i[better]] = j[better]
        self.similarity[i[better]] = s[better]


class Components:
    """Connected components of a graph whose edges come in batches: a union-find forest in one
    (n,) array."""

    def __init__(self, n: int):
        self.parent = np.arange(n, dtype=np.int64)

    def _roots(self, nodes: np.ndarray) -> np.ndarray:
        """Root of each of `nodes`, halving the paths walked on the way."""
        parent = self.parent
        x = nodes.copy()
        while True:
            p = parent[x]
            if np.array_equal(p, x):
                return x
            parent[x] = parent[p]  # path halving
            x = p

    def add(self, i: np.ndarray, j: np.ndarray) -> None:
        """Merge the components joined by edges (i, j)."""
        a, b = self._roots(np.asarray(i, np.int64)), self._roots(np.asarray(j, np.int64))
        while True:
            cross = a != b
            if not cross.any():
                return
            a, b = a[cross], b[cross]
            lo, hi = np.minimum(a, b), np.maximum(a, b)
            np.minimum.at(self.parent, hi, lo)  # each root points at the smallest root it meets
            a, b = self._roots(lo), self._roots(hi)

    @property
    def label(self) -> np.ndarray:
        """(n,) the root of each node's component (its smallest node)."""
        return self._roots(np.arange(len(self.parent), dtype=np.int64))

    def groups(self, min_size: int = 2) -> list[np.ndarray]:
        """The components of at least `min_size` nodes as sorted indices, by smallest node."""
        label = self.label
        order = np.argsort(label, kind="stable")
        labels = label[order]
        cuts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1], True])
        return [order[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True) if b - a >= min_size]
