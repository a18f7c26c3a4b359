"""Images as users have them: scanning folders and manifests, decoding, augmentation, splits."""

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
