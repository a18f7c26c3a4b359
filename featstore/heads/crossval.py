"""Choosing settings by cross-validation: every setting scored on the same repeated stratified
folds of the training part with the validation part folded in (mean and standard deviation of
the accuracy, mean log loss), and the settings to save refitted on all those rows."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from featstore.data.splits import Split
from featstore.errors import DatasetError
from featstore.heads.trials import Prepared, Progress, Setting, Trial, fit_setting, run_trials


@dataclass
class Folds:
    """The rows cross-validated (`pool`: training and validation rows of a split, in order),
    `folds` x `repeats` stratified folds drawn with `seed`, and each pool row's fold per repeat
    (`assignment`, (n_pool, repeats))."""

    pool: np.ndarray
    folds: int
    repeats: int
    seed: int
    assignment: np.ndarray

    @classmethod
    def of(cls, labels: np.ndarray, split: Split, folds: int, repeats: int, seed: int) -> Folds:
        """Draw the folds of `split`'s training and validation rows; DatasetError when a class has
        fewer than 2 of them (fewer folds are drawn when a class has fewer than `folds`)."""
        from sklearn.model_selection import RepeatedStratifiedKFold

        pool = np.sort(np.concatenate([split.train, split.val]))
        y = labels[pool]
        fewest = int(np.bincount(y)[np.unique(y)].min())
        if fewest < 2:
            raise DatasetError("cross-validation needs at least 2 images of each class in train and val")
        folds = min(folds, fewest)
        assignment = np.zeros((len(pool), repeats), dtype=np.int16)
        cv = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
        for i, (_, held) in enumerate(cv.split(np.zeros(len(pool)), y)):
            assignment[held, i // folds] = i % folds
        return cls(pool, folds, repeats, seed, assignment)

    def for_rows(self, digests: list[str], mine: list[str], split: Split) -> Folds:
        """The same folds for another feature set of the same images: each image (by content
        digest; `digests` this pool's feature set's, `mine` the other's) keeps its fold, so
        settings on either set are scored on the same images."""
        where = {d: i for i, d in enumerate(mine)}
        pool = np.array([where[digests[int(i)]] for i in self.pool], dtype=split.train.dtype)
        order = np.argsort(pool, kind="stable")
        return replace(self, pool=pool[order], assignment=self.assignment[order])

    @property
    def held_out(self) -> str:
        """What the out-of-fold predictions are, for a note: `out-of-fold predictions (5 folds x 2)`."""
        return f"out-of-fold predictions ({self.folds} folds x {self.repeats})"

    def splits(self):
        """(training positions, held-out positions) in the pool, fold by fold, repeat by repeat."""
        for r in range(self.repeats):
            for f in range(self.folds):
                held = self.assignment[:, r] == f
                yield np.flatnonzero(~held), np.flatnonzero(held)

    def describe(self, digests: list[str]) -> dict:
        """JSON-ready: folds, repeats, seed and each pool image's fold per repeat, by content digest."""
        return {
            "folds": self.folds,
            "repeats": self.repeats,
            "seed": self.seed,
            "assignment": {
                digests[int(i)]: row.tolist() for i, row in zip(self.pool, self.assignment, strict=True)
            },
        }

    def folded_split(self, split: Split) -> Split:
        """`split` with its validation rows folded into training (the test part unchanged)."""
        note = "validation folded into training for cross-validated selection"
        return replace(split, train=self.pool, val=np.zeros(0, dtype=split.val.dtype), note=note)


def cross_validate(
    settings: list[Setting],
    X: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    folds: Folds,
    source: str,
    n_jobs: int = 1,
    progress: Progress | None = None,
) -> list[Trial]:
    """One Trial per setting (in `settings` order) with `cv_accuracy`, `cv_std` and
    `cv_log_loss` over every fold and its out-of-fold probabilities in `held` (repeats,
    n_pool, n_classes) (no estimator: see `refit`); a setting that failed on any fold gets that
    fold's error."""
    per_fold: list[list[Trial]] = []
    positions = []
    n = folds.folds * folds.repeats
    for i, (tr, held) in enumerate(folds.splits()):
        positions.append(held)
        rows_tr, rows_held = folds.pool[tr], folds.pool[held]
        prep = Prepared(X[rows_tr], labels[rows_tr], X[rows_held], labels[rows_held], n_classes)

        def step(done: int, total: int, i=i) -> None:
            if progress is not None:
                progress(i * total + done, n * total)

        per_fold.append(run_trials(settings, prep, source, n_jobs, step))
    out = []
    for j, setting in enumerate(settings):
        fold_trials = [f[j] for f in per_fold]
        failed = next((t for t in fold_trials if t.estimator is None), None)
        trial = Trial(setting, source, fit_seconds=round(sum(t.fit_seconds or 0 for t in fold_trials), 3))
        if failed is not None:
            trial.error = failed.error or "could not be fitted on a fold"
        else:
            acc = np.array([t.val_accuracy for t in fold_trials], dtype=float)
            trial.cv_accuracy, trial.cv_std = (
                float(acc.mean()),
                float(acc.std(ddof=1) if len(acc) > 1 else 0.0),
            )
            trial.cv_log_loss = float(np.mean([t.val_log_loss for t in fold_trials]))
            trial.val_macro_f1 = float(np.mean([t.val_macro_f1 for t in fold_trials]))
            trial.held = np.zeros((folds.repeats, len(folds.pool), n_classes), dtype=np.float32)
            for i, (t, rows) in enumerate(zip(fold_trials, positions, strict=True)):
                trial.held[i // folds.folds, rows] = t.held[0]
                t.held = None
        out.append(trial)
    return out


def refit(
    trial: Trial, X: np.ndarray, labels: np.ndarray, n_classes: int, folds: Folds, n_jobs: int = 1
) -> Trial:
    """Fit the trial's setting on every pool row; the trial gets the estimator (or an error)."""
    rows = folds.pool
    prep = Prepared(X[rows], labels[rows], X[:0], labels[:0], n_classes)
    fitted = fit_setting(trial.setting, prep, trial.source, n_jobs=n_jobs)
    trial.estimator, trial.error = fitted.estimator, fitted.error
    trial.fit_seconds = fitted.fit_seconds
    return trial
