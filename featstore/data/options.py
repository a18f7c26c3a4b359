"""The options of reading and splitting images; pure Python, read by the CLI at start-up."""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, replace

from featstore.errors import InvalidOptionError
from featstore.options import Options, check_choice, check_whole

RESIZE_POLICIES = ("squash", "crop", "pad")
#: Default resize: like Keras' `load_img(target_size=...)`, the whole image squashed to a square.
DEFAULT_RESIZE = "squash"
INTERPOLATIONS = ("bilinear", "bicubic")
DECODERS = ("auto", "pillow", "simplejpeg")

#: The transforms, in the order they are applied whatever the order given.
AUGMENTATIONS = ("flip", "rotate", "zoom", "translate", "contrast")
#: Bump when the pixels a config makes change, so views cached by older code are recomputed.
AUGMENT_VERSION = 1
#: The `view` column is int16.
MAX_COPIES = 32767

#: How a split can be made (`Split.source`); `auto` picks stored when there is one, else stratified.
SPLIT_SOURCES = ("stored", "stratified", "hash")
SPLIT_CHOICES = ("auto", *SPLIT_SOURCES)


#: An input size in px: a side (square) or (height, width).
Size = int | tuple[int, int]


def hw(size: Size) -> tuple[int, int]:
    """(height, width) of an input size given as a side or as (height, width)."""
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def size_text(size: Size) -> str:
    """`224`, or `224x160` (height x width) when not square."""
    h, w = hw(size)
    return str(h) if h == w else f"{h}x{w}"


@dataclass(frozen=True)
class Resize:
    """How an image becomes the input's square: `policy` squash (aspect ignored), crop (the
    shorter side scaled to size / `crop_pct`, then the centre cut out) or pad (black borders),
    with `interpolation` bilinear or bicubic. Written as `crop:0.875:bicubic` (parts at their
    defaults left out: `crop` is `crop:1:bilinear`)."""

    policy: str = DEFAULT_RESIZE
    crop_pct: float = 1.0
    interpolation: str = "bilinear"

    @property
    def key(self) -> str:
        """The canonical text form, stored with features (so `squash` stays `squash`)."""
        parts = [self.policy]
        if self.crop_pct != 1.0:
            parts.append(f"{self.crop_pct:g}")
        if self.interpolation != "bilinear":
            parts.append(self.interpolation)
        return ":".join(parts)

    def scaled_side(self, size_px: int) -> int:
        """A side before the centre crop: floor(size / crop_pct), as timm computes it."""
        return max(size_px, math.floor(size_px / self.crop_pct + 1e-6))


@functools.lru_cache(maxsize=64)  # asked for every decoded image
def parse_resize(value: str) -> Resize:
    """Parse `squash`, `crop:0.875:bicubic`, `pad:bicubic`...; InvalidOptionError (param
    `resize`) for an unknown policy or interpolation, or a crop fraction outside (0, 1]."""
    policy, *rest = str(value).strip().lower().split(":")
    check_choice("resize", policy, RESIZE_POLICIES)
    crop_pct, interpolation = 1.0, "bilinear"
    for part in rest:
        if part in INTERPOLATIONS:
            interpolation = part
            continue
        try:
            crop_pct = float(part)
        except ValueError:
            raise InvalidOptionError(
                "resize",
                f"{value!r}: {part!r} is neither an interpolation ({', '.join(INTERPOLATIONS)}) "
                "nor a crop fraction",
            ) from None
        if policy != "crop" or not 0 < crop_pct <= 1:
            raise InvalidOptionError(
                "resize", f"{value!r}: a crop fraction goes with crop and lies in (0, 1], like crop:0.875"
            )
    return Resize(policy, crop_pct, interpolation)


@dataclass(frozen=True)
class DecodeOptions(Options):
    """How files become pixels: the `resize` (see `Resize`; None: the backbone's, squash for
    the Keras applications), the JPEG `decoder` (auto, pillow or simplejpeg; same pixels) and
    decode threads (`n_workers`, default per core)."""

    resize: str | None = None
    decoder: str = "auto"
    n_workers: int | None = None

    def for_backbone(self, preferred: str | None) -> DecodeOptions:
        """These options with `resize` filled in (the given one, else `preferred`, else squash)
        and written canonically."""
        resize = parse_resize(self.resize or preferred or DEFAULT_RESIZE).key
        return self if resize == self.resize else replace(self, resize=resize)

    def check(self) -> DecodeOptions:
        """Raise InvalidOptionError for an unknown resize or decoder, or fewer than 1 thread."""
        if self.resize is not None:
            parse_resize(self.resize)
        check_choice("decoder", self.decoder, DECODERS)
        if self.n_workers is not None and self.n_workers < 1:
            raise InvalidOptionError("n_workers", f"must be at least 1, not {self.n_workers}")
        return self


@dataclass(frozen=True)
class AugmentConfig:
    """Which transforms make each augmented view, how many views per image, and the seed."""

    ops: tuple[str, ...]
    copies: int
    seed: int = 0
    version: int = AUGMENT_VERSION

    def to_dict(self) -> dict:
        """Return a JSON-ready dict (stored in the feature set's `augment` attribute)."""
        return {"ops": list(self.ops), "copies": self.copies, "seed": self.seed, "version": self.version}

    @classmethod
    def from_dict(cls, d: dict) -> AugmentConfig:
        """Inverse of `to_dict`."""
        return cls(tuple(d["ops"]), int(d["copies"]), int(d.get("seed", 0)), int(d.get("version", 1)))

    def key_json(self) -> str:
        """The part of the config that decides a view's pixels (not `copies`), as canonical JSON."""
        return json.dumps({"ops": list(self.ops), "seed": self.seed, "version": self.version}, sort_keys=True)


def parse_augment(augment: str | None, copies: int = 0, seed: int = 0) -> AugmentConfig | None:
    """Turn `augment="flip,rotate", copies=3, seed=0` into a config (None: no views);
    InvalidOptionError for an unknown transform, copies outside 1..32767, or one without the other."""
    names = [n.strip().lower() for n in (augment or "").split(",") if n.strip()]
    choices = ", ".join(AUGMENTATIONS)
    if not names:
        if augment is not None and augment.strip():
            raise InvalidOptionError("augment", f"{augment!r} names no transform; use some of {choices}")
        if copies:
            raise InvalidOptionError(
                "copies", f"{copies} augmented views need transforms to make them: some of {choices}"
            )
        return None
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise InvalidOptionError(
            "augment", f"unknown augmentation {unknown[0]!r} in {augment!r}; choose from {choices}"
        )
    if copies == 0:
        raise InvalidOptionError(
            "copies",
            "must be at least 1 with transforms: how many augmented views to cache per training image",
        )
    if not 1 <= copies <= MAX_COPIES:
        raise InvalidOptionError("copies", f"must be between 1 and {MAX_COPIES}, not {copies}")
    ops = tuple(op for op in AUGMENTATIONS if op in names)
    return AugmentConfig(ops, copies, int(seed))


@dataclass(frozen=True)
class AugmentOptions(Options):
    """Augmented views stored beside each training image: `augment` (a comma list of flip, rotate,
    zoom, translate, contrast), `copies` per image, and `augment_seed`."""

    augment: str | None = None
    copies: int = 0
    augment_seed: int = 0

    def config(self) -> AugmentConfig | None:
        """The parsed config (None: no views); raises InvalidOptionError like `parse_augment`."""
        return parse_augment(self.augment, self.copies, self.augment_seed)

    def check(self) -> AugmentOptions:
        """Raise InvalidOptionError for an unknown transform or a bad number of copies."""
        self.config()
        return self


@dataclass(frozen=True)
class SplitOptions(Options):
    """How labelled images are split: `split` (auto, stored, stratified or hash), the fractions
    `test_size` and `val_size` (of train when carved from a stored train part), and `seed`;
    `max_rows`: read at most this many rows of a feature set, a sample stratified by class and
    chosen by content digest (None: every row), for sets too large to hold in memory; `stream`:
    leave the features in the shards and read them a block at a time while fitting (dense and
    logistic heads; taken without asking when a set is larger than a head reads into memory)."""

    split: str = "auto"
    test_size: float = 0.2
    val_size: float = 0.1
    seed: int = 0
    max_rows: int | None = None
    stream: bool = False

    def check(self) -> SplitOptions:
        """Raise InvalidOptionError for an unknown split or fractions outside [0, 1) or summing to 1."""
        if self.split not in SPLIT_CHOICES:
            raise InvalidOptionError(
                "split", f"must be one of {', '.join(SPLIT_SOURCES)}, not {self.split!r}"
            )
        for name in ("test_size", "val_size"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise InvalidOptionError(name, f"must be a fraction in [0, 1), not {value}")
        if self.test_size + self.val_size >= 1:
            raise InvalidOptionError(
                "test_size", f"and val_size must sum below 1, not {self.test_size} + {self.val_size}"
            )
        if self.max_rows is not None and (not isinstance(self.max_rows, int) or self.max_rows < 10):
            raise InvalidOptionError(
                "max_rows", f"must be a whole number of at least 10, not {self.max_rows!r}"
            )
        if self.stream and self.max_rows is not None:
            raise InvalidOptionError("stream", "reads every row; drop --max-train-rows, or --stream")
        return self

    def of_images(self, what: str) -> SplitOptions:
        """Return self checked for `what`, a command that splits images, not stored rows
        (InvalidOptionError for `max_rows` and `stream`, which only heads take)."""
        for name in ("max_rows", "stream"):
            if getattr(self, name) not in (None, False):
                raise InvalidOptionError(
                    name, f"is for fitting heads on large feature sets; {what} does not take it"
                )
        return self.check()


@dataclass(frozen=True)
class ShotOptions(Options):
    """Few-shot runs: `shots` (training images per class, one run per value) and `repeats` (draws
    per value; draw r uses the split's seed plus r)."""

    shots: tuple[int, ...] = ()
    repeats: int = 5

    def __post_init__(self) -> None:
        shots = self.shots
        object.__setattr__(self, "shots", (shots,) if isinstance(shots, int) else tuple(shots or ()))

    def check(self) -> ShotOptions:
        """Raise InvalidOptionError for shots below 1 or repeated, or repeats below 1."""
        for k in self.shots:
            try:
                check_whole("shots", k, 1)
            except InvalidOptionError:
                raise InvalidOptionError(
                    "shots", f"must be whole numbers of at least 1, not {list(self.shots)}"
                ) from None
        if len(set(self.shots)) != len(self.shots):
            raise InvalidOptionError("shots", f"lists a value twice: {list(self.shots)}")
        check_whole("repeats", self.repeats, 1)
        return self

    def seeds(self, seed: int) -> list[int]:
        """The seed of each draw (repeat) from base seed `seed`, the same for every value of shots."""
        return [seed + r for r in range(self.repeats)]


def parse_shots(text: str) -> tuple[int, ...]:
    """Parse "1,2,5,10" into sorted whole numbers (InvalidOptionError, param `shots`, otherwise)."""
    try:
        return tuple(sorted(int(x) for x in text.split(",") if x.strip()))
    except ValueError as err:
        raise InvalidOptionError(
            "shots", f"must be a comma-separated list of whole numbers, like 1,2,5,10; got {text!r}"
        ) from err
