"""Images as users have them: scanning folders and manifests, decoding, augmentation, splits.

Modules: `scan` (folders, train/val/test layouts, CSV manifests, path lists), `decode` (pixels
from files, resizing, the decode threads, `DecodeOptions`), `augment` (augmented views,
`AugmentOptions`), `splits` (train/validation/test parts, `SplitOptions`). Imports `errors`,
`files` and `options` only.
"""

from featstore.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "Dataset": "scan",
        "ImageItem": "scan",
        "scan_dataset": "scan",
        "DecodeOptions": "options",
        "load_images": "decode",
        "decode_image": "decode",
        "AugmentOptions": "options",
        "parse_augment": "options",
        "Split": "splits",
        "SplitOptions": "options",
        "make_split": "splits",
        "ShotOptions": "options",
    },
)
