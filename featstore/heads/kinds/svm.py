"""The svm head: a support-vector classifier on scaled features, its probabilities calibrated
(sigmoid) on held-out folds of the training rows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from featstore.errors import HeadError, InvalidOptionError
from featstore.heads.kinds import attach_pipeline_scaler, last_step, onnx_converter, pipeline
from featstore.heads.params import HeadParams, check_class_weight, check_scale
from featstore.heads.registry import FitContext, HeadKind, register_head_kind
from featstore.options import check_choice, is_positive

KERNELS = ("rbf", "linear")
#: Training rows above which the rbf kernel is refused: measured on 2 cores with 1 280 features,
#: 4 000 rows took 27 s and 8 000 took 122 s (time ~ rows^2.2), so 20 000 take about 15 minutes.
RBF_MAX_ROWS = 20_000
#: The C used when none is given, per kernel.
DEFAULT_C = {"rbf": 10.0, "linear": 0.001}


@dataclass(frozen=True)
class SvmParams(HeadParams):
    """svm: `kernel` rbf or linear, regularisation `C` (one value; None: 10 for rbf, 0.001 for
    linear), features scaled by `scale`, classes weighted by `class_weight` (None or balanced)."""

    kind: ClassVar[str] = "svm"
    scale: str = "standard"
    C: float | None = None
    kernel: str = "rbf"
    class_weight: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.C, (list, tuple)) and len(self.C) == 1:
            object.__setattr__(self, "C", self.C[0])

    @property
    def c(self) -> float:
        """The C used: `C`, or the kernel's default."""
        return DEFAULT_C.get(self.kernel) if self.C is None else self.C

    def to_dict(self) -> dict:
        """As `HeadParams.to_dict`, with the C used."""
        return {**super().to_dict(), "C": self.c}

    def check(self) -> SvmParams:
        """Raise InvalidOptionError naming the field of a value out of range; return self."""
        check_scale(self.scale)
        check_choice("kernel", self.kernel, KERNELS)
        check_class_weight(self.class_weight)
        if isinstance(self.C, (list, tuple)):
            raise InvalidOptionError("C", "svm takes one value; the logistic head searches a grid of C")
        if self.C is not None and not is_positive(self.C):
            raise InvalidOptionError("C", f"must be a positive number, not {self.C!r}")
        return self


def _build(params: SvmParams, context: FitContext):
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.svm import SVC, LinearSVC

    if params.kernel == "rbf" and (context.n_train or 0) > RBF_MAX_ROWS:
        raise HeadError(
            f"svm with the rbf kernel on {context.n_train:,} training rows would take hours (its time grows "
            f"with the square of the rows; above {RBF_MAX_ROWS:,} it is refused); use --kernel linear, "
            f"logistic, or --max-train-rows {RBF_MAX_ROWS}"
        )
    folds = min(3, context.min_per_class)
    if folds < 2:
        raise HeadError(
            "svm calibrates its probabilities by cross-validation and needs at least 2 training "
            f"images of every class (one class has {context.min_per_class}); add images or use logistic"
        )
    weight, seed = params.class_weight, params.random_state
    base = (
        LinearSVC(C=params.c, dual=False, class_weight=weight, random_state=seed)
        if params.kernel == "linear"
        else SVC(kernel="rbf", C=params.c, gamma="scale", class_weight=weight, random_state=seed)
    )
    calibrated = CalibratedClassifierCV(base, method="sigmoid", cv=folds, n_jobs=context.n_jobs)
    return pipeline(params.scale, calibrated)


def _owns(estimator) -> bool:
    from sklearn.calibration import CalibratedClassifierCV

    return isinstance(last_step(estimator), CalibratedClassifierCV)


register_head_kind(
    HeadKind(
        SvmParams,
        build=_build,
        to_onnx=onnx_converter("sklearn_graph"),
        owns=_owns,
        attach_scaler=attach_pipeline_scaler,
        probabilities="are calibrated on held-out folds (sigmoid).",
    )
)
