"""Preprocessing as data: what a network expects of its pixels, one `Preprocessing` for every
source, read from flags, a Hugging Face `preprocessor_config.json` or a timm `config.json`
(`pretrained_cfg`). The resize part is done when images are decoded; the rest (scale, mean,
std, channel order, layout, dtype) is folded into the exported graph, which takes uint8 RGB
NHWC pixels. No numpy, no TensorFlow: the CLI reads it at start-up."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

from featstore.backbones.options import CHANNELS, LAYOUTS, PRESETS
from featstore.data.options import INTERPOLATIONS, RESIZE_POLICIES, Resize
from featstore.errors import InvalidOptionError
from featstore.options import Record, check_choice

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Pillow's resampling numbers, as Hugging Face configs write them.
_PIL_RESAMPLE = {2: "bilinear", 3: "bicubic"}


@dataclass(frozen=True)
class Preprocessing(Record):
    """Pixels (0-255, RGB) to a network's input: `x * scale`, minus `mean`, divided by `std`
    (per channel, in RGB order), then the `channels` order (rgb, bgr) and `layout` (nhwc, nchw;
    None: read from the network's input shape) the network takes. Images are first resized to
    `input_size` px (the height, and `input_width` when not square) by `resize` (policy squash,
    crop or pad; `crop_pct`; `interpolation` bilinear or bicubic). `origin` says where it was
    read from (a preset, a config file, flags)."""

    scale: float = 1.0
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    channels: str = "rgb"
    layout: str | None = None
    input_size: int | None = None
    input_width: int | None = None
    resize: str = "squash"
    crop_pct: float = 1.0
    interpolation: str = "bilinear"
    origin: str = "flags"

    def __post_init__(self) -> None:
        for name in ("mean", "std"):
            value = getattr(self, name)
            object.__setattr__(self, name, tuple(float(v) for v in value))

    def check(self) -> Preprocessing:
        """Raise InvalidOptionError for a value no network input can have."""
        check_choice("channels", self.channels, CHANNELS)
        check_choice("layout", self.layout, LAYOUTS, allow_none=True)
        check_choice("resize", self.resize, RESIZE_POLICIES)
        check_choice("interpolation", self.interpolation, INTERPOLATIONS)
        for name in ("mean", "std"):
            if len(getattr(self, name)) != 3:
                raise InvalidOptionError(name, f"needs 3 values (R,G,B), not {list(getattr(self, name))}")
        if any(not (math.isfinite(s) and s > 0) for s in self.std):
            raise InvalidOptionError("std", f"must be 3 positive numbers, not {list(self.std)}")
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise InvalidOptionError("scale", f"must be a positive number, not {self.scale}")
        if not 0 < self.crop_pct <= 1:
            raise InvalidOptionError("crop_pct", f"must lie in (0, 1], not {self.crop_pct}")
        for name in ("input_size", "input_width"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InvalidOptionError(name, f"must be at least 1 px, not {value}")
        return self

    @property
    def size(self) -> int | tuple[int, int] | None:
        """The input size it says: a side, (height, width), or None."""
        if self.input_size is None or self.input_width in (None, self.input_size):
            return self.input_size
        return self.input_size, self.input_width

    @property
    def resize_key(self) -> str:
        """The decode-time resize as `DecodeOptions.resize` writes it (`crop:0.875:bicubic`)."""
        return Resize(self.resize, self.crop_pct if self.resize == "crop" else 1.0, self.interpolation).key

    def affine(self) -> tuple[list[float], list[float]]:
        """Per-channel (a, b), RGB order, with input = pixel * a + b."""
        a = [self.scale / s for s in self.std]
        b = [-m / s for m, s in zip(self.mean, self.std, strict=True)]
        return a, b

    def describe(self) -> str:
        """One line for cards and tables: `x/255, mean (0.485,...), std (...), rgb nchw, crop:0.875:bicubic`."""

        def nums(values):
            return "(" + ",".join(f"{v:g}" for v in values) + ")"

        return (
            f"x*{self.scale:g}, mean {nums(self.mean)}, std {nums(self.std)}, {self.channels} "
            f"{self.layout or 'layout of the input'}, {self.resize_key}"
        )

    @classmethod
    def from_dict(cls, data: dict) -> Preprocessing:
        """Inverse of `to_dict`."""
        return cls(**data)


def preset(name: str, **changes) -> Preprocessing:
    """The preprocessing of a Keras `preprocess_input` mode: tf ([-1, 1]), caffe (BGR minus the
    ImageNet means, 0-255), torch (ImageNet mean/std on [0, 1]) or none (0-255 floats)."""
    check_choice("preprocess", name, PRESETS)
    base = {
        "tf": Preprocessing(scale=1 / 127.5, mean=(1.0, 1.0, 1.0)),
        "caffe": Preprocessing(mean=(123.68, 116.779, 103.939), channels="bgr"),
        "torch": Preprocessing(scale=1 / 255, mean=IMAGENET_MEAN, std=IMAGENET_STD),
        "none": Preprocessing(),
    }[name]
    return replace(base, origin=f"preset {name}", **changes)


def _size(value, what: str, path: Path) -> int | tuple[int, int]:
    if isinstance(value, dict):
        if "shortest_edge" in value:
            return int(value["shortest_edge"])
        if "height" in value and "width" in value:
            return int(value["height"]), int(value["width"])
    if isinstance(value, int):
        return value
    if isinstance(value, (list, tuple)) and len(value) in (2, 3):
        return int(value[-2]), int(value[-1])
    raise InvalidOptionError("config", f"{path}: cannot read {what} {value!r}")


def _sides(value) -> dict:
    """`input_size` and `input_width` (None when square) of a side or (height, width)."""
    if isinstance(value, tuple):
        h, w = value
        return {"input_size": h, "input_width": None if w == h else w}
    return {"input_size": value, "input_width": None}


def from_huggingface(cfg: dict, path: Path) -> Preprocessing:
    """Read a Hugging Face image processor config (`preprocessor_config.json`): `size`
    (`shortest_edge`, or `height`/`width`), `crop_size` with `do_center_crop`, `resample`,
    `do_rescale`/`rescale_factor`, `do_normalize`/`image_mean`/`image_std`."""
    size = _size(cfg.get("size", 224), "size", path)
    crop = cfg.get("crop_size") if cfg.get("do_center_crop", "crop_size" in cfg) else None
    if crop is not None:
        crop = _size(crop, "crop_size", path)
        short = size if isinstance(size, int) else min(size)
        resize, crop_pct, input_size = (
            "crop",
            min(1.0, min(crop if isinstance(crop, tuple) else (crop,)) / short),
            crop,
        )
    elif isinstance(size, tuple):
        resize, crop_pct, input_size = "squash", 1.0, size
    else:  # a shortest edge and no crop: the picture is not square; cut the centre
        resize, crop_pct, input_size = "crop", 1.0, size
    resample = cfg.get("resample", 2)
    interpolation = _PIL_RESAMPLE.get(resample, resample if resample in INTERPOLATIONS else None)
    if interpolation is None:
        raise InvalidOptionError(
            "config", f"{path}: resample {resample!r} is not bilinear (2) or bicubic (3)"
        )
    scale = float(cfg.get("rescale_factor", 1 / 255)) if cfg.get("do_rescale", True) else 1.0
    normalize = cfg.get("do_normalize", True)
    mean = tuple(cfg.get("image_mean", (0.0,) * 3)) if normalize else (0.0,) * 3
    std = tuple(cfg.get("image_std", (1.0,) * 3)) if normalize else (1.0,) * 3
    return Preprocessing(
        scale=scale, mean=mean, std=std, layout="nchw", **_sides(input_size), resize=resize,
        crop_pct=crop_pct, interpolation=interpolation, origin=f"huggingface {path.name}",
    ).check()  # fmt: skip


def from_timm(cfg: dict, path: Path) -> Preprocessing:
    """Read a timm model config (`config.json` with `pretrained_cfg`, or a `pretrained_cfg`
    itself): `input_size` (C, H, W), `interpolation`, `mean`, `std`, `crop_pct`, `crop_mode`."""
    cfg = cfg.get("pretrained_cfg", cfg)
    input_size = _size(cfg.get("input_size", (3, 224, 224)), "input_size", path)
    interpolation = cfg.get("interpolation", "bicubic")
    if interpolation not in INTERPOLATIONS:
        raise InvalidOptionError(
            "config", f"{path}: interpolation {interpolation!r}; featstore does bilinear or bicubic"
        )
    mode = cfg.get("crop_mode", "center")
    if mode not in ("center", "squash"):
        raise InvalidOptionError("config", f"{path}: crop_mode {mode!r}; featstore does center or squash")
    crop_pct = float(cfg.get("crop_pct", 0.875))
    return Preprocessing(
        scale=1 / 255, mean=tuple(cfg.get("mean", IMAGENET_MEAN)), std=tuple(cfg.get("std", IMAGENET_STD)),
        layout="nchw", **_sides(input_size), resize="crop" if mode == "center" else "squash",
        crop_pct=crop_pct if mode == "center" else 1.0, interpolation=interpolation,
        origin=f"timm {path.name}",
    ).check()  # fmt: skip


def build(preprocess: str | None = None, config: str | Path | None = None, **changes) -> Preprocessing | None:
    """The preprocessing from a preset or a config file, with `changes` (fields not None)
    applied on top; None when neither a preset, a config nor a mean and std are given. A mean
    and std alone apply to pixels / 255, or to 0-255 pixels when a mean is above 1."""
    changes = {k: v for k, v in changes.items() if v is not None}
    if preprocess and config:
        raise InvalidOptionError("preprocess", "give a preset or a config file, not both")
    if config:
        base = read_config(config)
    elif preprocess:
        base = preset(preprocess)
    elif "mean" in changes and "std" in changes:  # means above 1 are on the 0-255 scale
        base = Preprocessing(scale=1.0 if max(changes["mean"]) > 1 else 1 / 255)
    else:
        return None
    origin = base.origin + (" with " + ", ".join(sorted(changes)) if changes else "")
    return replace(base, **changes, origin=origin).check()


def read_config(path: str | Path) -> Preprocessing:
    """The preprocessing in a Hugging Face or timm config file, told apart by their keys;
    InvalidOptionError when it is neither or cannot be read."""
    path = Path(path).expanduser()
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InvalidOptionError("config", f"cannot read {path} as JSON: {err}") from err
    if not isinstance(cfg, dict):
        raise InvalidOptionError("config", f"{path} holds no JSON object")
    if "pretrained_cfg" in cfg or ("input_size" in cfg and "mean" in cfg):
        return from_timm(cfg, path)
    if "image_mean" in cfg or "image_processor_type" in cfg or "feature_extractor_type" in cfg:
        return from_huggingface(cfg, path)
    raise InvalidOptionError(
        "config",
        f"{path} is neither a Hugging Face preprocessor_config.json (image_mean, size, ...) nor a "
        "timm config.json (pretrained_cfg with input_size, mean, std)",
    )
