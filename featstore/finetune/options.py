"""The options of `featstore finetune`, and `FinetuneConfig`: a run's stored config (the flat keys
every version of `meta.json` wrote and reads). Pure Python."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from featstore.data.options import AUGMENTATIONS, DecodeOptions, SplitOptions
from featstore.errors import InvalidOptionError
from featstore.options import Options

#: Devices TensorFlow trains on (tensorrt is for inference only).
TF_DEVICES = ("auto", "cpu", "cuda")
#: Top backbone layers trained in the fine-tune phase when `unfreeze` is not given.
DEFAULT_UNFREEZE = 30
#: Conv blocks simple-cnn can have.
MAX_DEPTH = 8


@dataclass(frozen=True)
class Unfreeze:
    """What `unfreeze` asks for: `all`, a count of top layers, or a fraction of the layers."""

    text: str

    def count(self, n_layers: int, network: str) -> int:
        """How many top layers of `n_layers` train; InvalidOptionError for a value that is not `all`,
        a whole number or a fraction in (0, 1], or above `n_layers`."""
        t = self.text.strip().lower()
        if t == "all":
            return n_layers
        try:
            value = float(t)
        except ValueError:
            value = -1.0
        if not math.isfinite(value) or value < 0 or (value != int(value) and value > 1):
            raise InvalidOptionError(
                "unfreeze",
                f"must be all, a number of top layers (e.g. 30) or a fraction (e.g. 0.3), not {self.text!r}",
            )
        if "." in t and value <= 1:
            return max(1, round(value * n_layers)) if value > 0 else 0
        n = int(value)
        if n > n_layers:
            raise InvalidOptionError(
                "unfreeze",
                f"{n} is more than the {n_layers} layers of {network}; "
                f"pass all, a fraction such as 0.3, or at most {n_layers}",
            )
        return n


def augment_ops(augment: str | list | tuple | None) -> tuple[str, ...]:
    """Turn `"flip,rotate"` (or a list) into the transforms in applied order; InvalidOptionError
    for an unknown name."""
    raw = augment.split(",") if isinstance(augment, str) else list(augment or ())
    names = [str(n).strip().lower() for n in raw if str(n).strip()]
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        shown = augment if isinstance(augment, str) else ",".join(map(str, raw))
        raise InvalidOptionError(
            "augment",
            f"unknown augmentation {unknown[0]!r} in {shown!r}; choose from {', '.join(AUGMENTATIONS)}",
        )
    return tuple(op for op in AUGMENTATIONS if op in names)


@dataclass(frozen=True)
class NetworkOptions(Options):
    """The network around the backbone: `weights` (imagenet, none, a file; None: imagenet, or none
    for scratch networks), square `input_size` (None: the backbone's; 128 simple-cnn, 32
    lenet), simple-cnn's `depth`, the head's hidden units `head_units` and `dropout`."""

    weights: str | None = None
    input_size: int | None = None
    depth: int = 3
    head_units: int | None = None
    dropout: float = 0.2

    def check(self) -> NetworkOptions:
        """Raise InvalidOptionError for a value out of range; return self."""
        if self.input_size is not None and self.input_size < 1:
            raise InvalidOptionError("input_size", f"must be at least 1 px, not {self.input_size}")
        if not 1 <= self.depth <= MAX_DEPTH:
            raise InvalidOptionError("depth", f"must be between 1 and {MAX_DEPTH}, not {self.depth}")
        if self.head_units is not None and self.head_units < 0:
            raise InvalidOptionError("head_units", f"must be 0 or more, not {self.head_units}")
        if not 0 <= self.dropout < 1:
            raise InvalidOptionError("dropout", f"must be in [0, 1), not {self.dropout}")
        return self

    def head_units_for(self, backbone: str) -> int:
        """Units of the head's hidden Dense layer (0: none) for `backbone`."""
        if self.head_units is not None:
            return int(self.head_units)
        return 128 if backbone == "simple-cnn" else 0


@dataclass(frozen=True)
class TrainingOptions(Options):
    """How the network trains: `epochs` in all, the first `warmup_epochs` the head only at `lr`, then
    the top `unfreeze` backbone layers too (`all`, a count or a fraction; None: 30) at
    `fine_lr`; `batch_size`; the `augment` transforms; `label_smoothing`; `class_weights`
    (inverse frequency); `patience` epochs without a lower validation loss before stopping."""

    epochs: int = 10
    warmup_epochs: int = 2
    unfreeze: str | None = None
    lr: float = 1e-3
    fine_lr: float = 1e-4
    batch_size: int = 32
    augment: tuple[str, ...] = ()
    label_smoothing: float = 0.0
    class_weights: bool = False
    patience: int = 5

    def __post_init__(self):
        if isinstance(self.augment, str) or isinstance(self.augment, list):
            raw = self.augment.split(",") if isinstance(self.augment, str) else self.augment
            object.__setattr__(self, "augment", tuple(str(n).strip().lower() for n in raw if str(n).strip()))
        if self.unfreeze is not None and not isinstance(self.unfreeze, str):
            object.__setattr__(self, "unfreeze", str(self.unfreeze))

    def check(self) -> TrainingOptions:
        """Raise InvalidOptionError for a value out of range; return the options with the
        augmentation in applied order."""
        at_least = {"epochs": 1, "warmup_epochs": 0, "batch_size": 1, "patience": 1}
        for name, low in at_least.items():
            value = getattr(self, name)
            if value < low:
                what = "at least 1" if low else "0 or more"
                raise InvalidOptionError(name, f"must be {what}, not {value}")
        for name in ("lr", "fine_lr"):
            if not getattr(self, name) > 0:
                raise InvalidOptionError(name, f"must be positive, not {getattr(self, name)}")
        if not 0 <= self.label_smoothing < 1:
            raise InvalidOptionError("label_smoothing", f"must be in [0, 1), not {self.label_smoothing}")
        if self.unfreeze is not None:
            Unfreeze(self.unfreeze).count(10**9, "the network")  # the form only; the count once built
        return replace(self, augment=augment_ops(self.augment))


def _device_checked(device: str) -> str:
    if device not in TF_DEVICES:
        raise InvalidOptionError(
            "device",
            f"must be one of {', '.join(TF_DEVICES)} for finetune, not {device!r} "
            "(TensorFlow trains; tensorrt is for inference)",
        )
    return device


@dataclass(frozen=True)
class FinetuneOptions(Options):
    """Every option of a fine-tune run: network, training, split, decoding and the TensorFlow
    `device` (auto, cpu, cuda). `device` and `decode.n_workers` are the session's; the rest is
    the run's own, stored and used again on resume."""

    network: NetworkOptions = field(default_factory=NetworkOptions)
    training: TrainingOptions = field(default_factory=TrainingOptions)
    split: SplitOptions = field(default_factory=SplitOptions)
    decode: DecodeOptions = field(default_factory=DecodeOptions)
    device: str = "auto"

    def check(self) -> FinetuneOptions:
        """Return the checked options; InvalidOptionError names the keyword of a value out of range."""
        return FinetuneOptions(
            self.network.check(),
            self.training.check(),
            self.split.of_images("finetune"),
            self.decode.check(),
            _device_checked(self.device),
        )


#: Keys of `FinetuneConfig.to_dict` that belong to `DecodeOptions` (n_workers is per session).
_DECODE_KEYS = ("resize", "decoder")


@dataclass(frozen=True)
class FinetuneConfig:
    """What one run is, as `meta.json` stores it under `config`: the `backbone`, the `data` path and
    `dataset` name, and the options (without the session's device and decode threads)."""

    backbone: str
    data: str
    dataset: str
    options: FinetuneOptions = field(default_factory=FinetuneOptions)

    def to_dict(self) -> dict:
        """Return the flat JSON-ready dict every version stores (`augment` a list)."""
        o = self.options
        flat = {"backbone": self.backbone, "data": self.data, "dataset": self.dataset}
        flat.update(o.network.to_dict())
        flat.update(o.training.to_dict(), augment=list(o.training.augment))
        flat.update({k: v for k, v in o.split.to_dict().items() if k not in ("max_rows", "stream")})
        flat.update({k: getattr(o.decode, k) for k in _DECODE_KEYS})
        return flat

    @classmethod
    def from_dict(cls, data: dict, session: FinetuneOptions | None = None) -> FinetuneConfig:
        """Rebuild from `to_dict` output (keys of other versions ignored, missing ones at their
        defaults); the device and decode threads come from `session`."""
        session = session or FinetuneOptions()
        stored = {k: v for k, v in data.items() if k in _DECODE_KEYS}
        options = FinetuneOptions(
            NetworkOptions.from_dict(data),
            TrainingOptions.from_dict(data),
            SplitOptions.from_dict(data),
            replace(DecodeOptions.from_dict(stored), n_workers=session.decode.n_workers),
            session.device,
        )
        return cls(data["backbone"], data["data"], data.get("dataset", ""), options.check())
