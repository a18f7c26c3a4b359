"""The knn head: the k nearest training rows by cosine distance, weighted by 1/distance.

Features are standardised by default: with raw features of a random network (all positive,
norms near 1e-10) every cosine distance is the same and knn answers one class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from featstore.errors import HeadError
from featstore.heads.kinds import attach_pipeline_scaler, last_step, onnx_converter, pipeline
from featstore.heads.params import HeadParams, check_scale
from featstore.heads.registry import FitContext, HeadKind, register_head_kind
from featstore.options import check_whole

#: Training rows above which knn is refused: measured on 2 cores with 1 280 features, 2 000 queries
#: against 8 000 rows took 1.6 s, so scoring the validation and test parts of 100 000 rows
#: (35 000 queries) takes about 6 minutes, and time grows with rows x queries.
MAX_ROWS = 100_000


@dataclass(frozen=True)
class KnnParams(HeadParams):
    """knn: `k` neighbours (at most the training rows), features scaled by `scale`."""

    kind: ClassVar[str] = "knn"
    scale: str = "standard"
    k: int = 10

    def check(self) -> KnnParams:
        """Raise InvalidOptionError naming the field of a value out of range; return self."""
        check_scale(self.scale)
        check_whole("k", self.k, 1)
        return self


def _build(params: KnnParams, context: FitContext):
    from sklearn.neighbors import KNeighborsClassifier

    if (context.n_train or 0) > MAX_ROWS:
        raise HeadError(
            f"knn compares every image with all {context.n_train:,} training rows (exact search; above "
            f"{MAX_ROWS:,} it is refused); use logistic, `featstore search` (an approximate index), or "
            f"--max-train-rows {MAX_ROWS}"
        )

    k = min(params.k, context.n_train) if context.n_train else params.k
    knn = KNeighborsClassifier(n_neighbors=k, metric="cosine", weights="distance", n_jobs=context.n_jobs)
    return pipeline(params.scale, knn)


def _owns(estimator) -> bool:
    from sklearn.neighbors import KNeighborsClassifier

    return isinstance(last_step(estimator), KNeighborsClassifier)


register_head_kind(
    HeadKind(
        KnnParams,
        build=_build,
        to_onnx=onnx_converter("knn_graph"),
        owns=_owns,
        attach_scaler=attach_pipeline_scaler,
    )
)
