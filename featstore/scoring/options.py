"""The options of `featstore score`: `ScoreOptions` (what to score with, what to read, what to
write), and the batch size `auto` means for scoring. Pure Python."""

from __future__ import annotations

from dataclasses import dataclass

from featstore.errors import InvalidOptionError
from featstore.inference.devices import CPU_BATCH
from featstore.inference.options import InferenceOptions
from featstore.options import Options

#: Images per batch when `InferenceOptions.batch_size` is "auto": ONNX Runtime's best CPU batch;
#: also the default of `featstore score --batch-size`.
AUTO_BATCH = CPU_BATCH


@dataclass(frozen=True)
class ScoreOptions(Options):
    """What one `score` job does: the images (`input`), the table (`output`: .parquet, .csv or
    .jsonl), the model (exactly one of `head` and `model`, `finetune:<run-id>`), `top_k` classes
    per row, `overwrite` an existing output, `force` every image to be computed again, and an
    "unknown" answer: `reject_below` (a row whose top probability is below it says `unknown`) or
    `target_precision` (that threshold chosen on the head's held-out predictions so the rows it
    names reach this precision)."""

    input: str
    output: str
    head: str | None = None
    model: str | None = None
    top_k: int = 3
    overwrite: bool = False
    force: bool = False
    reject_below: float | None = None
    target_precision: float | None = None

    def check(self) -> ScoreOptions:
        """Raise InvalidOptionError when not exactly one of head and model is given, top_k < 1,
        a threshold or precision outside (0, 1), both given, or a precision target for a model."""
        check_one_model(self.head, self.model)
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 1:
            raise InvalidOptionError("top_k", f"must be a whole number of at least 1, not {self.top_k!r}")
        for name in ("reject_below", "target_precision"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and 0 < value < 1):
                raise InvalidOptionError(name, f"must be a probability between 0 and 1, not {value!r}")
        if self.reject_below is not None and self.target_precision is not None:
            raise InvalidOptionError("reject_below", "give a threshold or a target precision, not both")
        if self.target_precision is not None and self.head is None:
            raise InvalidOptionError("target_precision", "is chosen on a head's held-out images; give --head")
        return self


def check_one_model(head: str | None, model: str | None) -> None:
    """Raise InvalidOptionError unless exactly one of `head` and `model` is given."""
    if (head is None) == (model is None):
        raise InvalidOptionError("head", "give exactly one: head (a head id) or model (finetune:<run-id>)")


def batch_rows(inference: InferenceOptions) -> int:
    """Images per batch: `inference.batch_size`, or `AUTO_BATCH` for "auto"."""
    return AUTO_BATCH if inference.batch_size == "auto" else int(inference.batch_size)
