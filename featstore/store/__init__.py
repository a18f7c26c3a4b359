"""The store on disk: layout, feature-set files and their parts, heads and fine-tune runs as
folders, the run log, maintenance."""

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
