"""featstore: a feature store and classical-classifier toolkit for image transfer learning.

`featstore.Store(root)` is the Python twin of the CLI (see docs/python.md); the functions below
are the commands one by one, with their options objects. `import featstore` is light (no
TensorFlow, no onnxruntime): every name is loaded on first use.
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    # the Python API: a store whose methods mirror the CLI
    "Store": ("featstore.api", "Store"),
    "FeatureSet": ("featstore.api", "FeatureSet"),
    "Head": ("featstore.api", "Head"),
    # one function per command
    "run_demo": ("featstore.demo", "run_demo"),
    "extract": ("featstore.extraction.job", "extract"),
    "fit_head": ("featstore.heads.fitting", "fit_head"),
    "evaluate": ("featstore.heads.evaluation", "evaluate"),
    "fit_heads": ("featstore.heads.dispatch", "fit_heads"),
    "sweep": ("featstore.heads.sweep", "sweep"),
    "few_shot": ("featstore.heads.fewshot", "few_shot"),
    "fit_ensemble": ("featstore.heads.ensemble", "fit_ensemble"),
    "find_duplicates": ("featstore.inspect.duplicates", "find_duplicates"),
    "find_leaks": ("featstore.inspect.leaks", "find_leaks"),
    "find_label_issues": ("featstore.inspect.labels", "find_label_issues"),
    "draw_map": ("featstore.inspect.maps", "draw_map"),
    "score": ("featstore.scoring.jobs", "score"),
    "predict": ("featstore.scoring.arrays", "predict"),
    "export_head": ("featstore.scoring.deploy", "export_head"),
    "build_report": ("featstore.report.model", "build_report"),
    "list_backbones": ("featstore.backbones.catalog", "list_backbones"),
    "list_weights": ("featstore.backbones.weights", "list_weights"),
    "pull_weights": ("featstore.backbones.weights_pull", "pull_weights"),
    "import_weights": ("featstore.backbones.weights", "import_weights"),
    "ensure_weights": ("featstore.backbones.weights", "ensure_weights"),
    # results
    "ExtractResult": ("featstore.extraction.result", "ExtractResult"),
    # options objects
    "JobOptions": ("featstore.jobs", "JobOptions"),
    "BackboneOptions": ("featstore.backbones.registry", "BackboneOptions"),
    "DecodeOptions": ("featstore.data.decode", "DecodeOptions"),
    "AugmentOptions": ("featstore.data.augment", "AugmentOptions"),
    "SplitOptions": ("featstore.data.splits", "SplitOptions"),
    "RuntimeOptions": ("featstore.runtime", "RuntimeOptions"),
    "PrecisionOptions": ("featstore.inference.precision", "PrecisionOptions"),
    "ExtractOptions": ("featstore.extraction.options", "ExtractOptions"),
    "HeadConfig": ("featstore.heads.options", "HeadConfig"),
    "FinetuneOptions": ("featstore.finetune.options", "FinetuneOptions"),
    "ScoreOptions": ("featstore.scoring.options", "ScoreOptions"),
    "SweepOptions": ("featstore.heads.sweep", "SweepOptions"),
    "ShotOptions": ("featstore.data.splits", "ShotOptions"),
    "SimilarityOptions": ("featstore.inspect.options", "SimilarityOptions"),
    "CrossValOptions": ("featstore.inspect.options", "CrossValOptions"),
    "MapOptions": ("featstore.inspect.options", "MapOptions"),
    # registries and lower-level pieces
    "available_backbones": ("featstore.backbones.registry", "available_backbones"),
    "get_backbone": ("featstore.backbones.registry", "get_backbone"),
    "register_backbone": ("featstore.backbones.registry", "register_backbone"),
    "register_head_kind": ("featstore.heads.registry", "register_head_kind"),
    "available_head_kinds": ("featstore.heads.registry", "available_head_kinds"),
    "scan_dataset": ("featstore.data.scan", "scan_dataset"),
    "resolve_store": ("featstore.store.layout", "resolve_store"),
    "open_feature_set": ("featstore.store.featuresets", "open_feature_set"),
    "prepare_model": ("featstore.inference.precision", "prepare_model"),
    "find_variant": ("featstore.inference.precision", "find_variant"),
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
