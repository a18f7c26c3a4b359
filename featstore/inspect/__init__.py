"""A look inside the embeddings of a feature set: duplicates, train/test leaks, likely label errors
and a 2-D map, each logged as an `inspect` run."""

from featstore.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "SimilarityOptions": "options",
        "CrossValOptions": "options",
        "MapOptions": "options",
        "Inspection": "results",
        "read_inspection": "results",
        "inspections_dir": "results",
        "find_duplicates": "duplicates",
        "find_leaks": "leaks",
        "find_label_issues": "labels",
        "draw_map": "maps",
    },
)
