"""The options of one `extract` run: `ExtractOptions` (its own) and `ExtractSettings` (all of
them, checked, as the pipeline reads them).

`extract_settings` gathers the option objects (`BackboneOptions`, `DecodeOptions`,
`RuntimeOptions`, `PrecisionOptions`, `AugmentOptions`, `ExtractOptions`, `JobOptions`) and
applies flat keywords (`batch_size=64`, `store="s"`, `precision="int8"`) onto them, so a caller
may pass objects, keywords or both. Imports `options`, `jobs`, `runtime`, `data`, `store`
(the feature dtypes), `backbones.registry` and `inference.precision`; none of them opens a file.
"""

from __future__ import annotations

from dataclasses import dataclass

from featstore.backbones.registry import BackboneOptions
from featstore.data.augment import AugmentOptions
from featstore.data.decode import DecodeOptions
from featstore.inference.precision import PrecisionOptions
from featstore.jobs import JobOptions
from featstore.options import Options, check_choice, merge_options
from featstore.runtime import RuntimeOptions
from featstore.store.featuresets import DTYPES


@dataclass(frozen=True)
class ExtractOptions(Options):
    """What `extract` itself decides: the dataset's `name` in the store (default: the folder's
    name), the `dtype` features are stored in (float32 or float16), `force` (recompute every
    image and replace the feature set) and `wait` (wait for another run writing the same feature
    set instead of failing)."""

    name: str | None = None
    dtype: str = "float32"
    force: bool = False
    wait: bool = False

    def check(self) -> ExtractOptions:
        """Raise InvalidOptionError for an unknown dtype (a bad name is `scan_dataset`'s error)."""
        check_choice("dtype", self.dtype, DTYPES)
        return self


@dataclass(frozen=True)
class ExtractSettings:
    """Every option of one extract run, checked; the decoder may still be "auto"."""

    backbone: BackboneOptions
    decode: DecodeOptions
    runtime: RuntimeOptions
    precision: PrecisionOptions
    augment: AugmentOptions
    options: ExtractOptions
    job: JobOptions


def extract_settings(
    backbone: BackboneOptions | str = BackboneOptions.backbone,
    *,
    decode: DecodeOptions | None = None,
    runtime: RuntimeOptions | str | None = None,
    precision: PrecisionOptions | str | None = None,
    augment: AugmentOptions | str | None = None,
    options: ExtractOptions | None = None,
    job: JobOptions | None = None,
    **keywords,
) -> ExtractSettings:
    """Gather `extract`'s options into one checked `ExtractSettings` (None: the defaults).

    A backbone name, or a string given as `runtime`, `precision` or `augment`, is that field's value;
    every other keyword sets the field of that name in the object that declares it
    (`batch_size=64` in `runtime`, `store="s"` in `job`), which must then not be passed as an
    object too (`featstore.options.merge_options`).

    Raises
    ------
    InvalidOptionError
        A keyword no options object declares (the message lists the valid ones), or a bad value.
    """
    if isinstance(backbone, str):
        keywords["backbone"], backbone = backbone, None
    if isinstance(runtime, str):
        keywords["runtime"], runtime = runtime, None
    if isinstance(precision, str):
        keywords["precision"], precision = precision, None
    if isinstance(augment, str):
        keywords["augment"], augment = augment, None
    given = {
        BackboneOptions: backbone,
        DecodeOptions: decode,
        RuntimeOptions: runtime,
        PrecisionOptions: precision,
        AugmentOptions: augment,
        ExtractOptions: options,
        JobOptions: job,
    }
    return ExtractSettings(*merge_options(given, keywords))
