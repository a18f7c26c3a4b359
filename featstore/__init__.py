"""featstore: a feature store and classical-classifier toolkit for image transfer learning.

`featstore.Store(root)` takes keyword arguments (docs/python.md); the functions below are the
commands, taking option objects. Every name loads on first use.
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    # the Python API: a store whose methods are the commands, taking keywords
    "Store": ("featstore.api", "Store"),
    "FeatureSet": ("featstore.api", "FeatureSet"),
    "Head": ("featstore.api", "Head"),
    "Reporter": ("featstore.reporter", "Reporter"),
    # one function per command, taking option objects
    "run_demo": ("featstore.demo", "run_demo"),
    "list_backbones": ("featstore.backbones.catalog", "list_backbones"),
    "list_weights": ("featstore.backbones.weights", "list_weights"),
    "pull_weights": ("featstore.backbones.fetching", "pull_weights"),
    "import_weights": ("featstore.backbones.fetching", "import_weights"),
    "ensure_weights": ("featstore.backbones.fetching", "ensure_weights"),
    "extract": ("featstore.extraction.job", "extract"),
    "fit_head": ("featstore.heads.fitting", "fit_head"),
    "sweep": ("featstore.heads.sweep", "sweep"),
    "few_shot": ("featstore.heads.fewshot", "few_shot"),
    "ensemble": ("featstore.heads.ensemble", "ensemble"),
    "evaluate": ("featstore.heads.evaluation", "evaluate"),
    "find_duplicates": ("featstore.inspect.duplicates", "find_duplicates"),
    "find_leaks": ("featstore.inspect.leaks", "find_leaks"),
    "find_label_issues": ("featstore.inspect.labels", "find_label_issues"),
    "draw_map": ("featstore.inspect.maps", "draw_map"),
    "score": ("featstore.scoring.jobs", "score"),
    "predict": ("featstore.scoring.arrays", "predict"),
    "export_head": ("featstore.scoring.deploy", "export_head"),
    "build_report": ("featstore.report.build", "build_report"),
    "render_markdown": ("featstore.report.markdown", "render_markdown"),
    "render_html": ("featstore.report.html", "render_html"),
    # options objects
    "JobOptions": ("featstore.options", "JobOptions"),
    "BackboneOptions": ("featstore.backbones.options", "BackboneOptions"),
    "DecodeOptions": ("featstore.data.options", "DecodeOptions"),
    "AugmentOptions": ("featstore.data.options", "AugmentOptions"),
    "SplitOptions": ("featstore.data.options", "SplitOptions"),
    "ShotOptions": ("featstore.data.options", "ShotOptions"),
    "InferenceOptions": ("featstore.inference.options", "InferenceOptions"),
    "PrecisionOptions": ("featstore.inference.options", "PrecisionOptions"),
    "ExtractOptions": ("featstore.extraction.options", "ExtractOptions"),
    "SweepOptions": ("featstore.heads.params", "SweepOptions"),
    "SvmParams": ("featstore.heads.kinds.svm", "SvmParams"),
    "LogisticParams": ("featstore.heads.kinds.logistic", "LogisticParams"),
    "DenseParams": ("featstore.heads.kinds.dense", "DenseParams"),
    "KnnParams": ("featstore.heads.kinds.knn", "KnnParams"),
    "FinetuneOptions": ("featstore.finetune.options", "FinetuneOptions"),
    "ScoreOptions": ("featstore.scoring.options", "ScoreOptions"),
    "SimilarityOptions": ("featstore.inspect.options", "SimilarityOptions"),
    "CrossValOptions": ("featstore.inspect.options", "CrossValOptions"),
    "MapOptions": ("featstore.inspect.options", "MapOptions"),
    # registries
    "register_head_kind": ("featstore.heads.registry", "register_head_kind"),
    "available_head_kinds": ("featstore.heads.registry", "available_head_kinds"),
    "make_params": ("featstore.heads.registry", "make_params"),
    "register_source": ("featstore.backbones.recipes", "register_source"),
    "available_sources": ("featstore.backbones.recipes", "available_sources"),
    "register_runtime": ("featstore.inference.runtimes", "register_runtime"),
    "available_runtimes": ("featstore.inference.runtimes", "available_runtimes"),
    "register_backbone": ("featstore.backbones.applications", "register_backbone"),
    "available_backbones": ("featstore.backbones.applications", "available_backbones"),
    "get_backbone": ("featstore.backbones.applications", "get_backbone"),
    # lower-level pieces
    "ExtractResult": ("featstore.extraction.result", "ExtractResult"),
    "scan_dataset": ("featstore.data.scan", "scan_dataset"),
    "resolve_store": ("featstore.store.layout", "resolve_store"),
    "open_feature_set": ("featstore.store.featuresets", "open_feature_set"),
    "prepare_model": ("featstore.inference.precision", "prepare_model"),
    "find_variant": ("featstore.inference.variants", "find_variant"),
}

__all__ = ["__version__", *_LAZY]


def __dir__() -> list[str]:
    return sorted(__all__)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'featstore' has no attribute {name!r}")
