"""featstore: a feature store and classical-classifier toolkit for image transfer learning.

`featstore.Store(root)` takes keyword arguments (docs/python.md); the functions below are the
commands, taking option objects. Every name loads on first use.
"""

from __future__ import annotations

__version__ = "0.1.0"

_EXPORTS = {
    # the Python API: a store whose methods are the commands, taking keywords
    "featstore.api": "Store FeatureSet Head",
    "featstore.reporter": "Reporter",
    # one function per command, taking option objects
    "featstore.demo": "run_demo",
    "featstore.backbones.catalog": "list_backbones",
    "featstore.backbones.adding": "add_backbone remove_backbone added_backbones",
    "featstore.backbones.weights": "list_weights",
    "featstore.backbones.fetching": "pull_weights import_weights ensure_weights",
    "featstore.extraction.job": "extract",
    "featstore.heads.fitting": "fit_head",
    "featstore.heads.sweep": "sweep",
    "featstore.heads.fewshot": "few_shot",
    "featstore.heads.ensemble": "ensemble",
    "featstore.heads.evaluation": "evaluate",
    "featstore.finetune.run": "finetune",
    "featstore.inspect.duplicates": "find_duplicates",
    "featstore.inspect.leaks": "find_leaks",
    "featstore.inspect.labels": "find_label_issues",
    "featstore.inspect.maps": "draw_map",
    "featstore.inspect.search": "search",
    "featstore.scoring.jobs": "score",
    "featstore.scoring.arrays": "predict",
    "featstore.scoring.deploy": "export_head",
    "featstore.report.build": "build_report",
    "featstore.report.markdown": "render_markdown",
    "featstore.report.html": "render_html",
    # options objects
    "featstore.options": "JobOptions",
    "featstore.backbones.options": "BackboneOptions AddOptions",
    "featstore.backbones.preprocessing": "Preprocessing",
    "featstore.data.options": "DecodeOptions AugmentOptions SplitOptions ShotOptions",
    "featstore.inference.options": "InferenceOptions PrecisionOptions",
    "featstore.extraction.options": "ExtractOptions",
    "featstore.heads.params": "SweepOptions",
    "featstore.heads.kinds.svm": "SvmParams",
    "featstore.heads.kinds.logistic": "LogisticParams",
    "featstore.heads.kinds.dense": "DenseParams",
    "featstore.heads.kinds.knn": "KnnParams",
    "featstore.finetune.options": "FinetuneOptions",
    "featstore.scoring.options": "ScoreOptions",
    "featstore.inspect.options": "SimilarityOptions CrossValOptions MapOptions SearchOptions",
    # registries
    "featstore.heads.registry": "register_head_kind available_head_kinds make_params",
    "featstore.backbones.recipes": "register_source available_sources",
    "featstore.inference.runtimes": "register_runtime available_runtimes",
    "featstore.backbones.applications": "register_backbone available_backbones get_backbone",
    # lower-level pieces
    "featstore.extraction.result": "ExtractResult",
    "featstore.data.scan": "scan_dataset",
    "featstore.store.layout": "resolve_store",
    "featstore.store.shards": "open_feature_set",
    "featstore.inference.precision": "prepare_model",
    "featstore.inference.variants": "find_variant",
}
_LAZY = {name: module for module, names in _EXPORTS.items() for name in names.split()}

__all__ = ["__version__", *_LAZY]


def __dir__() -> list[str]:
    return sorted(__all__)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'featstore' has no attribute {name!r}")
