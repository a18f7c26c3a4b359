"""The names `featstore.data.images` has always offered, from where they live now: scanning in
`featstore.data.scan`, decoding and the prefetch threads in `featstore.data.decode`.

Kept so that code importing `featstore.data.images` keeps working; new code imports the two
modules. Imports `data.scan` and `data.decode` only.
"""

from __future__ import annotations

from featstore.data.decode import (
    DECODERS,
    DEFAULT_RESIZE,
    RESIZE_POLICIES,
    DecodeOptions,
    ImageDecodeError,
    LoadedImage,
    MakeViews,
    check_resize,
    decode_image,
    load_images,
    resolve_decoder,
)
from featstore.data.scan import (
    IMAGE_EXTENSIONS,
    SPLIT_NAMES,
    Dataset,
    ImageItem,
    Skipped,
    check_name,
    scan_dataset,
    walk_images,
)

__all__ = [
    "DECODERS",
    "DEFAULT_RESIZE",
    "IMAGE_EXTENSIONS",
    "RESIZE_POLICIES",
    "SPLIT_NAMES",
    "DecodeOptions",
    "Dataset",
    "ImageDecodeError",
    "ImageItem",
    "LoadedImage",
    "MakeViews",
    "Skipped",
    "check_name",
    "check_resize",
    "decode_image",
    "load_images",
    "resolve_decoder",
    "scan_dataset",
    "walk_images",
]
