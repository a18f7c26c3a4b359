"""The options of `featstore inspect`; light enough for the CLI to read its defaults at start-up."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from featstore.errors import InvalidOptionError
from featstore.options import Options, check_choice

#: How `inspect map` lays the images out: UMAP when installed, else t-SNE (PCA for large sets).
MAP_METHODS = ("auto", "umap", "tsne", "pca")
#: Above this many images `auto` lays a map out with PCA when UMAP is not installed (t-SNE
#: takes about a minute for 4,300 images on 2 busy cores, and grows faster than the images).
TSNE_MAX_IMAGES = 5_000


def _number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _whole(value, low: int) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= low


@dataclass(frozen=True)
class SimilarityOptions(Options):
    """When two images count as near duplicates: cosine similarity of their cached features at
    least `threshold` (in (0, 1]; 1 keeps only identical directions)."""

    threshold: float = 0.95

    def check(self) -> SimilarityOptions:
        """Raise InvalidOptionError for a threshold outside (0, 1]; return self."""
        if not (_number(self.threshold) and 0 < self.threshold <= 1):
            raise InvalidOptionError(
                "threshold", f"must be a cosine similarity in (0, 1], not {self.threshold!r}"
            )
        return self


@dataclass(frozen=True)
class CrossValOptions(Options):
    """How every labelled image gets a prediction from a head that never saw it: `folds`-fold
    cross-validation (stratified, one content digest per fold, shuffled with `seed`) of `head`
    (logistic, svm or knn) with regularisation `C` (several: an inner search, about 3 x len(C)
    times slower) on `n_jobs` workers.

    The default C, 0.01, gave the best cross-validated accuracy and log loss of 0.001..1 on
    MobileNetV2 features of the flowers photos (0.900 and 0.31; C = 1: 0.883 and 0.59).
    """

    head: str = "logistic"
    folds: int = 5
    C: tuple[float, ...] = (0.01,)
    seed: int = 0
    n_jobs: int = 2

    def __post_init__(self) -> None:
        if isinstance(self.C, numbers.Real):
            object.__setattr__(self, "C", (self.C,))
        elif isinstance(self.C, list):
            object.__setattr__(self, "C", tuple(self.C))

    def check(self) -> CrossValOptions:
        """Raise InvalidOptionError naming the field for a value out of range; return self."""
        if not _whole(self.folds, 2):
            raise InvalidOptionError("folds", f"must be a whole number of at least 2, not {self.folds!r}")
        if not self.C or any(not (_number(c) and c > 0) for c in self.C):
            raise InvalidOptionError("C", f"values must be positive numbers, not {list(self.C)}")
        if not _whole(self.n_jobs, 1):
            raise InvalidOptionError("n_jobs", f"must be a whole number of at least 1, not {self.n_jobs!r}")
        if not _whole(self.seed, 0):
            raise InvalidOptionError("seed", f"must be a whole number of at least 0, not {self.seed!r}")
        return self


@dataclass(frozen=True)
class MapOptions(Options):
    """How `inspect map` lays images out: `method` (auto: UMAP when installed, else t-SNE up to
    `TSNE_MAX_IMAGES` images, PCA above), t-SNE's `perplexity`, the `seed`, and whether to mark
    the images a cross-validated head misclassifies."""

    method: str = "auto"
    perplexity: float = 30.0
    seed: int = 0
    mark_misclassified: bool = True

    def check(self) -> MapOptions:
        """Raise InvalidOptionError for an unknown method or a perplexity below 1; return self."""
        check_choice("method", self.method, MAP_METHODS)
        if not (_number(self.perplexity) and self.perplexity >= 1):
            raise InvalidOptionError("perplexity", f"must be a number of at least 1, not {self.perplexity!r}")
        if not _whole(self.seed, 0):
            raise InvalidOptionError("seed", f"must be a whole number of at least 0, not {self.seed!r}")
        return self


#: How `search` compares: exactly (blockwise, every stored row), with a FAISS index, or `auto`.
SEARCH_METHODS = ("auto", "exact", "faiss")
#: From this many rows `auto` searches with FAISS when it is installed (bench/bench_search.py).
FAISS_MIN_ROWS = 200_000


@dataclass(frozen=True)
class SearchOptions(Options):
    """What `search` returns: the `k` most similar stored images per query (cosine of the
    features), found exactly or with FAISS (`method`; `auto` uses FAISS above
    `FAISS_MIN_ROWS` rows when it is installed)."""

    k: int = 10
    method: str = "auto"

    def check(self) -> SearchOptions:
        """Raise InvalidOptionError for k below 1 or an unknown method; return self."""
        if not _whole(self.k, 1):
            raise InvalidOptionError("k", f"must be a whole number of at least 1, not {self.k!r}")
        check_choice("method", self.method, SEARCH_METHODS)
        return self
