"""The store on disk: its layout, feature-set files and resumable parts, heads and fine-tune runs
as folders, the run log, and maintenance (list, show, remove, verify).

Modules: `layout`, `featuresets` (whole files), `parts` (resumable part files), `head_files`,
`run_files`, `runlog` (typed run records), `maintenance`. Imports `errors`, `files`, `options`
and `data` only.
"""

from featstore.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "StoreLayout": "layout",
        "resolve_store": "layout",
        "FeatureSetReader": "featuresets",
        "open_feature_set": "featuresets",
        "write_feature_set": "featuresets",
        "feature_set_lock": "featuresets",
        "load_head": "head_files",
        "list_heads": "head_files",
        "list_runs": "run_files",
        "record_run": "runlog",
        "read_runs": "runlog",
        "list_feature_sets": "maintenance",
        "describe_feature_set": "maintenance",
        "remove_feature_set": "maintenance",
        "verify_store": "maintenance",
    },
)
