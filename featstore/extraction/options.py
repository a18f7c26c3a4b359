"""The options of one `extract` run: `ExtractOptions` (its own), and `ExtractSettings`, every
option of the run as the pipeline reads them. Pure Python."""

from __future__ import annotations

from dataclasses import dataclass

from featstore.backbones.options import BackboneOptions
from featstore.data.options import AugmentOptions, DecodeOptions
from featstore.data.views import parse_views
from featstore.inference.options import InferenceOptions, PrecisionOptions
from featstore.options import JobOptions, Options, check_choice
from featstore.store.layout import DTYPES


@dataclass(frozen=True)
class ExtractOptions(Options):
    """What `extract` decides: the dataset's `name` in the store (default: the folder's), the
        stored `dtype` (float32 or float16), `force` (recompute everything), `wait` (for another
        run writing the same feature set instead of failing), `views` (test-time views, a comma list
        of flip and crops5: each row the mean of the features of the image and its views, in a
        feature set of its own, `<dataset>@<backbone>-views-flip`), `rehash` (read and hash every image
    file again instead of trusting the stat cache)."""

    name: str | None = None
    dtype: str = "float32"
    force: bool = False
    wait: bool = False
    views: str | None = None
    rehash: bool = False

    def check(self) -> ExtractOptions:
        """Raise InvalidOptionError for an unknown dtype or view (a bad name is `scan_dataset`'s error)."""
        check_choice("dtype", self.dtype, DTYPES)
        parse_views(self.views)
        return self


@dataclass(frozen=True)
class ExtractSettings:
    """Every option of one extract run, checked; the decoder may still be "auto"."""

    backbone: BackboneOptions
    decode: DecodeOptions
    inference: InferenceOptions
    precision: PrecisionOptions
    augment: AugmentOptions
    options: ExtractOptions
    job: JobOptions
