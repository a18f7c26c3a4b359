"""`featstore extract`: images -> backbone -> feature set, resumable and cached by content."""

from featstore.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "extract": "job",
        "ExtractResult": "result",
        "ExtractOptions": "options",
        "extract_settings": "options",
    },
)
