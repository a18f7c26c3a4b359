"""Images as users have them: scanning folders and manifests, decoding, augmentation, splits.

Modules: `images` (datasets, decoding, resizing), `augment` (augmented views), `splits`
(train/validation/test parts). Imports `errors` and `files` only.
"""

from featstore.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "Dataset": "images",
        "ImageItem": "images",
        "scan_dataset": "images",
        "load_images": "images",
        "decode_image": "images",
        "parse_augment": "augment",
        "Split": "splits",
        "make_split": "splits",
    },
)
