"""Which network makes the features: `BackboneOptions`. Pure Python: the CLI reads its defaults
from it at start-up."""

from __future__ import annotations

from dataclasses import dataclass

from featstore.errors import InvalidOptionError
from featstore.options import Options, check_choice

POOLINGS = ("avg", "max")
#: Keras' preprocess_input modes, as presets of an added network's preprocessing.
PRESETS = ("tf", "caffe", "torch", "none")
CHANNELS = ("rgb", "bgr")
LAYOUTS = ("nhwc", "nchw")
#: Poolings of an added network's output: spatial maps and tokens (see `folding`).
ADD_POOLINGS = ("avg", "max", "gem", "cls", "mean", "cls+mean")


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


@dataclass(frozen=True)
class AddOptions(Options):
    """How a user's network file becomes a named backbone (`featstore backbones add`): its
    preprocessing from a `preprocess` preset (tf, caffe, torch, none) or a Hugging Face / timm
    `config` file, with `mean`, `std` (RGB), `scale`, `channels`, `layout`, `input_size`,
    `resize`, `crop_pct` and `interpolation` changing single fields; the `output` to read
    (several outputs) and its `pooling` (avg, max, gem for maps; cls, mean, cls+mean for
    tokens); `trust` loads a Keras file that runs code from the file; `replace` an existing name."""

    preprocess: str | None = None
    config: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    scale: float | None = None
    channels: str | None = None
    layout: str | None = None
    input_size: int | None = None
    resize: str | None = None
    crop_pct: float | None = None
    interpolation: str | None = None
    output: str | None = None
    pooling: str = "avg"
    trust: bool = False
    replace: bool = False

    def preprocessing(self):
        """The `Preprocessing` these options say (None: they say none); InvalidOptionError for
        bad values."""
        from featstore.backbones.preprocessing import build

        fields = ("mean", "std", "scale", "channels", "layout", "input_size", "resize", "crop_pct")
        changes = {k: getattr(self, k) for k in (*fields, "interpolation")}
        return build(self.preprocess, self.config, **changes)

    def check(self) -> AddOptions:
        """Raise InvalidOptionError for an unknown pooling or a bad preprocessing value."""
        check_choice("pooling", self.pooling, ADD_POOLINGS)
        self.preprocessing()
        return self
