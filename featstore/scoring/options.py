"""The options of `featstore score`, and the flat keywords a Python caller may give instead.

Owns `ScoreOptions` (what to score with, what to read, what to write), the batch size `auto`
means for scoring, and the split of flat keywords into `ScoreOptions`, `RuntimeOptions`,
`DecodeOptions` and `JobOptions`. Imports `options`, `errors`, `runtime`, `jobs` and
`data.decode` (the option classes only); nothing that loads ONNX Runtime or HDF5.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from featstore.data.decode import DecodeOptions
from featstore.errors import InvalidOptionError
from featstore.jobs import JobOptions
from featstore.options import Options, merge_options
from featstore.runtime import CPU_BATCH, RuntimeOptions

#: Images per batch when `RuntimeOptions.batch_size` is "auto": ONNX Runtime's best CPU batch;
#: also the default of `featstore score --batch-size`.
AUTO_BATCH = CPU_BATCH


@dataclass(frozen=True)
class ScoreOptions(Options):
    """What one `score` job does: the images (`input`: a folder, a .csv or .txt list, a glob or
    one image), the table it writes (`output`: .parquet, .csv or .jsonl), the model (exactly one
    of `head`, a head id, and `model`, `finetune:<run-id>`), how many of the likeliest classes
    each row lists (`top_k`), whether an existing output is replaced (`overwrite`), and whether
    every image is computed again instead of reusing stored features and earlier parts (`force`)."""

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


def batch_rows(runtime: RuntimeOptions) -> int:
    """Images per batch: `runtime.batch_size`, or `AUTO_BATCH` for "auto"."""
    return AUTO_BATCH if runtime.batch_size == "auto" else int(runtime.batch_size)


def score_options(
    options: ScoreOptions | str | os.PathLike,
    output: str | os.PathLike | None = None,
    keywords: dict | None = None,
    runtime: RuntimeOptions | None = None,
    decode: DecodeOptions | None = None,
    job: JobOptions | None = None,
) -> tuple[ScoreOptions, RuntimeOptions, DecodeOptions, JobOptions]:
    """Return the four checked option objects of a `score` call.

    `options` is a `ScoreOptions`, or the input: then `output` and the flat `keywords` give the
    rest, fields of `ScoreOptions` (head, model, top_k, overwrite, force), `RuntimeOptions`
    (device, batch_size, n_threads, engine, ray_address), `DecodeOptions` (decoder, n_workers;
    resize is the head's own) and `JobOptions` (store, emissions, country). Objects given are
    used as they are; a keyword may not set a field of an object also given
    (`featstore.options.merge_options`); missing objects take their defaults.

    Raises
    ------
    InvalidOptionError
        A keyword no class declares (the message lists the valid ones), a keyword of a class
        also given as an object, or a bad value.
    TypeError
        An output beside a `ScoreOptions`, or no output with an input.
    """
    keywords = dict(keywords or {})
    if isinstance(options, ScoreOptions):
        if output is not None:
            raise TypeError("score(ScoreOptions(...)) takes the output inside the ScoreOptions")
        given = {ScoreOptions: options}
    elif output is None:
        raise TypeError("score(input, output, ...) needs the output table")
    else:
        keywords.update(input=os.fspath(options), output=os.fspath(output))
        given = {ScoreOptions: None}
    given.update({RuntimeOptions: runtime, DecodeOptions: decode, JobOptions: job})
    return tuple(merge_options(given, keywords))
