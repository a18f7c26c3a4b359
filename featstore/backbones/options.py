"""Which network makes the features: `BackboneOptions`. Pure Python: the CLI reads its defaults
from it at start-up."""

from __future__ import annotations

from dataclasses import dataclass

from featstore.errors import InvalidOptionError
from featstore.options import Options, check_choice

POOLINGS = ("avg", "max")


@dataclass(frozen=True)
class BackboneOptions(Options):
    """Which network makes the features: `backbone` (a Keras application, a .onnx or .keras file,
    `finetune:<run-id>`), `weights` (imagenet, none, a file), square `input_size` in px
    (default the backbone's), an intermediate `layer` and the `pooling` (avg or max)."""

    backbone: str = "mobilenet_v2"
    weights: str = "imagenet"
    input_size: int | None = None
    layer: str | None = None
    pooling: str = "avg"

    def check(self) -> BackboneOptions:
        """Raise InvalidOptionError for an unknown pooling or an input size below 1 px."""
        check_choice("pooling", self.pooling, POOLINGS)
        if self.input_size is not None and self.input_size < 1:
            raise InvalidOptionError("input_size", f"must be at least 1 px, not {self.input_size}")
        return self
