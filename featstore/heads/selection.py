"""Greedy ensemble selection with replacement (Caruana et al., 2004) on held-out probabilities,
and the rule that prefers the ensemble over the best single setting only beyond noise.

The held-out probabilities are each setting's out-of-fold predictions under cross-validation
(every pool image predicted by the fold models that did not train on it, once per repeat) or its
predictions on the validation part. Choosing members on those same rows flatters the ensemble,
so the comparison with the best single setting is itself cross-validated: for each group of
rows, members (and the single setting) are chosen on the other groups and scored on that one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: The ensemble is preferred when its paired gain in accuracy over the best single setting is
#: more than this many standard errors of that gain (about a one-sided 2.5 % test).
NOISE_SE = 2.0


def _score(proba: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(accuracy, log loss) of probabilities `proba` (repeats, n, classes) against `y` (n,)."""
    right = proba.argmax(axis=2) == y
    picked = np.take_along_axis(proba, y[None, :, None], axis=2)[..., 0]
    return float(right.mean()), float(-np.log(np.clip(picked, 1e-15, 1.0)).mean())


def greedy(held: np.ndarray, y: np.ndarray, rounds: int) -> np.ndarray:
    """Choose an ensemble by greedy forward selection with replacement.

    `held` is (settings, repeats, n, classes) held-out probabilities and `y` (n,) the labels.
    Start from the best setting; in each of `rounds` - 1 rounds add the setting (again, if it
    is the best choice) whose addition gives the highest accuracy of the mean, lower log loss
    breaking ties; keep the best of the ensembles met on the way. Returns counts (settings,)
    int: how many times each setting was chosen (the weights are counts / counts.sum()).
    """
    m = len(held)
    first = _best_single(held, y)
    counts = np.zeros(m, dtype=int)
    counts[first] = 1
    total = held[first].astype(np.float64)
    best, best_counts = _score(held[first], y), counts.copy()
    for size in range(2, rounds + 1):
        trials = [_score((total + held[j]) / size, y) for j in range(m)]
        j = min(range(m), key=lambda i: (-trials[i][0], trials[i][1]))
        total += held[j]
        counts[j] += 1
        if (trials[j][0], -trials[j][1]) > (best[0], -best[1]):
            best, best_counts = trials[j], counts.copy()
    return best_counts


@dataclass
class EnsembleChoice:
    """A greedy ensemble and whether it beats the best single setting beyond noise.

    `counts` (settings,) the times each setting was chosen on all held-out rows; `gain` the mean
    paired difference in accuracy (ensemble minus single, both chosen inside the groups they
    are not scored on), `se` its standard error over images, `groups` how many groups;
    `preferred` when gain > NOISE_SE x se."""

    counts: np.ndarray
    gain: float
    se: float
    groups: int
    preferred: bool

    @property
    def members(self) -> list[int]:
        """Indices of the settings in the ensemble, most weight first."""
        chosen = np.flatnonzero(self.counts)
        return [int(i) for i in chosen[np.argsort(-self.counts[chosen], kind="stable")]]

    @property
    def weights(self) -> list[float]:
        """The members' weights, in `members` order, summing to 1."""
        return [float(self.counts[i] / self.counts.sum()) for i in self.members]

    def reason(self, names: list[str], single: str) -> str:
        """One line: what the greedy selection kept and why it is or is not preferred over
        `single`, the best single setting; `names` label the settings."""
        kept = ", ".join(f"{names[i]} x{self.counts[i]}" for i in self.members)
        gain = (
            f"{100 * self.gain:+.1f} points over {single} (2 standard errors: {100 * NOISE_SE * self.se:.1f})"
        )
        if len(self.members) < 2:
            return f"greedy ensemble selection kept only {kept}: the single head is chosen"
        verdict = (
            "beyond noise: the ensemble is chosen"
            if self.preferred
            else "within noise: the single head is chosen"
        )
        return f"greedy ensemble of {kept}: {gain} in cross-checked accuracy, {verdict}"


def select_ensemble(held: np.ndarray, y: np.ndarray, groups: np.ndarray, rounds: int) -> EnsembleChoice:
    """The greedy ensemble of `rounds` picks on all rows, and the cross-checked comparison with
    the best single setting.

    `held` (settings, repeats, n, classes), `y` (n,) labels, `groups` (n,) int: the rows'
    groups (the first repeat's folds, or stratified groups of the validation part). For each
    group, the ensemble and the best single setting are chosen on the other rows and scored on
    the group's; the per-image difference in accuracy (averaged over repeats) gives the gain and
    its standard error.
    """
    counts = greedy(held, y, rounds)
    n = len(y)
    diff = np.zeros(n)
    names = np.unique(groups)
    for g in names:
        inside = groups == g
        if inside.all():
            break
        rest = held[:, :, ~inside]
        chosen = greedy(rest, y[~inside], rounds)
        single = _best_single(rest, y[~inside])
        here = held[:, :, inside]
        mixed = np.tensordot(chosen / chosen.sum(), here, axes=1)
        ens_right = (mixed.argmax(axis=2) == y[inside]).mean(axis=0)
        one_right = (here[single].argmax(axis=2) == y[inside]).mean(axis=0)
        diff[inside] = ens_right - one_right
    gain = float(diff.mean())
    se = float(diff.std(ddof=1) / np.sqrt(n)) if n > 1 else float("inf")
    preferred = bool(len(np.flatnonzero(counts)) > 1 and len(names) > 1 and gain > NOISE_SE * se and gain > 0)
    return EnsembleChoice(counts, gain, se, len(names), preferred)


def _best_single(held: np.ndarray, y: np.ndarray) -> int:
    """The setting with the best accuracy (lower log loss breaking ties): the greedy's first pick."""
    scores = [_score(h, y) for h in held]
    return min(range(len(held)), key=lambda j: (-scores[j][0], scores[j][1]))
