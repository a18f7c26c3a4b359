"""The dense head: a small Keras network on scaled features (`featstore.heads.dense.DenseHead`),
trained with early stopping on the validation rows."""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import ClassVar

from featstore.errors import InvalidOptionError
from featstore.heads.kinds import onnx_converter
from featstore.heads.params import HeadParams, check_class_weight, check_scale
from featstore.heads.registry import FitContext, HeadKind, register_head_kind
from featstore.options import check_whole, is_positive


@dataclass(frozen=True)
class DenseParams(HeadParams):
    """dense: `hidden` units per hidden layer, `dropout` after each, at most `epochs` epochs at
    `learning_rate`, stopping after `patience` epochs without validation progress; features
    scaled by `scale`, classes weighted by `class_weight` (None or balanced)."""

    kind: ClassVar[str] = "dense"
    scale: str = "standard"
    hidden: tuple[int, ...] = (256,)
    dropout: float = 0.5
    epochs: int = 30
    learning_rate: float = 1e-3
    patience: int = 5
    class_weight: str | None = None

    def __post_init__(self) -> None:
        hidden = self.hidden
        object.__setattr__(self, "hidden", (hidden,) if isinstance(hidden, numbers.Real) else tuple(hidden))

    def check(self) -> DenseParams:
        """Raise InvalidOptionError naming the field of a value out of range; return self."""
        check_scale(self.scale)
        check_class_weight(self.class_weight)
        if any(not isinstance(h, numbers.Integral) or h < 1 for h in self.hidden):
            raise InvalidOptionError(
                "hidden", f"layer sizes must be whole numbers of at least 1, not {list(self.hidden)}"
            )
        if not (isinstance(self.dropout, numbers.Real) and 0 <= self.dropout < 1):
            raise InvalidOptionError("dropout", f"must be in [0, 1), not {self.dropout}")
        check_whole("epochs", self.epochs, 1)
        check_whole("patience", self.patience, 0)
        if not is_positive(self.learning_rate):
            raise InvalidOptionError("learning_rate", f"must be a positive number, not {self.learning_rate}")
        return self


def _build(params: DenseParams, context: FitContext):
    from featstore.heads.dense import DenseHead

    return DenseHead(
        hidden=tuple(params.hidden),
        dropout=params.dropout,
        epochs=params.epochs,
        learning_rate=params.learning_rate,
        patience=params.patience,
        scale=params.scale,
        class_weight=params.class_weight,
        random_state=params.random_state,
    )


def _fit(estimator, X, y, X_val, y_val) -> None:
    estimator.fit(X, y, X_val, y_val)  # early stopping on the validation rows


def _attach_scaler(estimator, scaler, scale: str) -> None:
    estimator.scale, estimator.scaler_ = scale, scaler


def _count(config: dict, n_features: int, n_classes: int) -> int:
    sizes = [n_features, *config.get("hidden", []), n_classes]
    return sum((a + 1) * b for a, b in zip(sizes, sizes[1:], strict=False))


def _owns(estimator) -> bool:
    from featstore.heads.dense import DenseHead

    return isinstance(estimator, DenseHead)


register_head_kind(
    HeadKind(
        DenseParams,
        build=_build,
        fit=_fit,
        to_onnx=onnx_converter("dense_graph"),
        count_params=_count,
        owns=_owns,
        attach_scaler=_attach_scaler,
        parallel=False,
    )
)
