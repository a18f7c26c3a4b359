"""A look inside the embeddings: duplicates, train/test leaks, likely label errors and a 2-D map,
each computed on a feature set of the store and logged as an `inspect` run.

Modules: `options` (SimilarityOptions, CrossValOptions, MapOptions), `sets` (the rows and
features inspected), `similarity` (every pair above a cosine threshold, blockwise and exact),
`crossval` (cross-validated probabilities of a head), `duplicates`, `leaks`, `labels`, `maps`,
`results` (Inspection, the result files in `store/inspections/`, the run record).
Imports `heads` (registry, options, kinds), `data.splits`, `jobs`, `store`, `files`, `deps`,
`options` and `errors`; scikit-learn, scipy, cleanlab, umap-learn and matplotlib inside the
functions that use them.
"""

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
