"""featstore: a feature store and classical-classifier toolkit for image transfer learning.

`import featstore` is light (no TensorFlow, no onnxruntime); the functions below are loaded
on first use.
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "extract": ("featstore.extraction.job", "extract"),
    "ExtractResult": ("featstore.extraction.job", "ExtractResult"),
    "scan_dataset": ("featstore.data.images", "scan_dataset"),
    "available_backbones": ("featstore.backbones.registry", "available_backbones"),
    "get_backbone": ("featstore.backbones.registry", "get_backbone"),
    "register_backbone": ("featstore.backbones.registry", "register_backbone"),
    "resolve_store": ("featstore.store.layout", "resolve_store"),
    "open_feature_set": ("featstore.store.featuresets", "open_feature_set"),
    "run_demo": ("featstore.demo", "run_demo"),
    "score": ("featstore.scoring.jobs", "score"),
    "export_head": ("featstore.scoring.deploy", "export_head"),
    "list_backbones": ("featstore.backbones.catalog", "list_backbones"),
    "prepare_model": ("featstore.inference.precision", "prepare_model"),
    "ensure_weights": ("featstore.backbones.weights", "ensure_weights"),
    "list_weights": ("featstore.backbones.weights", "list_weights"),
    "pull_weights": ("featstore.backbones.weights_pull", "pull_weights"),
    "import_weights": ("featstore.backbones.weights", "import_weights"),
    "fit_head": ("featstore.heads.fitting", "fit_head"),
    "evaluate": ("featstore.heads.fitting", "evaluate"),
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
