"""The ensemble kind: the soft vote of saved heads (`featstore.heads.ensemble`), made from heads,
never fitted on features; it exports as one ONNX graph when every member converts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from featstore.errors import HeadError
from featstore.heads.params import HeadParams
from featstore.heads.registry import FitContext, HeadKind, get_head_kind, register_head_kind

PROBABILITIES = "are the weighted mean of the members' probabilities (soft voting)."


@dataclass(frozen=True)
class EnsembleParams(HeadParams):
    """ensemble: no parameters of its own; its members are saved heads."""

    kind: ClassVar[str] = "ensemble"


def _build(params, context: FitContext):
    raise HeadError("ensemble heads are made from saved heads: featstore fit-head ensemble --heads A,B")


def _count(config: dict, n_features: int, n_classes: int) -> int | None:
    """The members' trainable parameters added up; None when one has no count."""
    total = 0
    for member in config.get("members") or []:
        try:
            kind = get_head_kind(member.get("kind"))
        except HeadError:
            return None
        count = None if kind.count_params is None else kind.count_params(member, n_features, n_classes)
        if count is None:
            return None
        total += count
    return total or None


def _to_onnx(estimator, n_features: int, opset: int):
    from featstore.heads.ensemble import ensemble_graph

    return ensemble_graph(estimator, n_features, opset)


def _owns(estimator) -> bool:
    from featstore.heads.ensemble import EnsembleHead

    return isinstance(estimator, EnsembleHead)


register_head_kind(
    HeadKind(
        EnsembleParams,
        build=_build,
        to_onnx=_to_onnx,
        count_params=_count,
        owns=_owns,
        probabilities=PROBABILITIES,
        from_features=False,
    )
)
