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
    per row, `overwrite` an existing output, `force` every image to be computed again."""

    input: str
    output: str
    head: str | None = None
    model: str | None = None
    top_k: int = 3
    overwrite: bool = False
    force: bool = False

    def check(self) -> ScoreOptions:
        """Raise InvalidOptionError when not exactly one of head and model is given, or top_k < 1."""
        check_one_model(self.head, self.model)
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 1:
            raise InvalidOptionError("top_k", f"must be a whole number of at least 1, not {self.top_k!r}")
        return self


def check_one_model(head: str | None, model: str | None) -> None:
    """Raise InvalidOptionError unless exactly one of `head` and `model` is given."""
    if (head is None) == (model is None):
        raise InvalidOptionError("head", "give exactly one: head (a head id) or model (finetune:<run-id>)")


def batch_rows(inference: InferenceOptions) -> int:
    """Images per batch: `inference.batch_size`, or `AUTO_BATCH` for "auto"."""
    return AUTO_BATCH if inference.batch_size == "auto" else int(inference.batch_size)
