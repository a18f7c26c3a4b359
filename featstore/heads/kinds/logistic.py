"""The logistic head: multinomial logistic regression on scaled features; with several values
of C, 3-fold cross-validation on the training rows picks one."""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import ClassVar

from featstore.errors import InvalidOptionError
from featstore.heads.kinds import attach_pipeline_scaler, last_step, onnx_converter, pipeline
from featstore.heads.params import HeadParams, check_class_weight, check_scale
from featstore.heads.registry import FitContext, HeadKind, register_head_kind
from featstore.options import is_positive

#: The C grid searched by 3-fold cross-validation when none is given.
DEFAULT_C = (0.01, 0.1, 1.0, 10.0)


@dataclass(frozen=True)
class LogisticParams(HeadParams):
    """logistic: regularisation `C` (one value, or several for a 3-fold cross-validated choice),
    features scaled by `scale`, classes weighted by `class_weight` (None or balanced)."""

    kind: ClassVar[str] = "logistic"
    scale: str = "standard"
    C: tuple[float, ...] = DEFAULT_C
    class_weight: str | None = None

    def __post_init__(self) -> None:
        C = self.C
        object.__setattr__(self, "C", (C,) if isinstance(C, numbers.Real) else tuple(C))

    def check(self) -> LogisticParams:
        """Raise InvalidOptionError naming the field of a value out of range; return self."""
        check_scale(self.scale)
        check_class_weight(self.class_weight)
        if not self.C or not all(is_positive(c) for c in self.C):
            raise InvalidOptionError("C", f"values must be positive numbers, not {list(self.C)}")
        return self


def _build(params: LogisticParams, context: FitContext):
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV

    folds = min(3, context.min_per_class)
    C, weight, seed = params.C, params.class_weight, params.random_state
    if len(C) == 1 or folds < 2:
        c = C[0] if len(C) == 1 else sorted(C)[len(C) // 2]
        clf = LogisticRegression(C=c, max_iter=1000, class_weight=weight, random_state=seed)
    else:
        clf = LogisticRegressionCV(
            Cs=list(C),
            cv=folds,
            max_iter=1000,
            n_jobs=context.n_jobs,
            scoring="accuracy",
            l1_ratios=(0.0,),
            use_legacy_attributes=False,
            class_weight=weight,
            random_state=seed,
        )
    return pipeline(params.scale, clf)


def _count(config: dict, n_features: int, n_classes: int) -> int:
    return (n_features + 1) * (1 if n_classes == 2 else n_classes)


def _owns(estimator) -> bool:
    from sklearn.linear_model import LogisticRegression

    return isinstance(last_step(estimator), LogisticRegression)


register_head_kind(
    HeadKind(
        LogisticParams,
        build=_build,
        to_onnx=onnx_converter("sklearn_graph"),
        count_params=_count,
        owns=_owns,
        attach_scaler=attach_pipeline_scaler,
    )
)
