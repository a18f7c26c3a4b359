"""featstore: a feature store and classical-classifier toolkit for image transfer learning.

`import featstore` is light (no TensorFlow, no onnxruntime); the functions below are loaded
on first use.
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "extract": ("featstore.extraction", "extract"),
    "ExtractResult": ("featstore.extraction", "ExtractResult"),
    "scan_dataset": ("featstore.images", "scan_dataset"),
    "available_backbones": ("featstore.backbones", "available_backbones"),
    "get_backbone": ("featstore.backbones", "get_backbone"),
    "register_backbone": ("featstore.backbones", "register_backbone"),
    "resolve_store": ("featstore.layout", "resolve_store"),
    "open_feature_set": ("featstore.store", "open_feature_set"),
    "run_demo": ("featstore.demo", "run_demo"),
    "score": ("featstore.scoring", "score"),
    "export_head": ("featstore.deploy", "export_head"),
    "list_backbones": ("featstore.catalog", "list_backbones"),
    "prepare_model": ("featstore.precision", "prepare_model"),
    "ensure_weights": ("featstore.weights", "ensure_weights"),
    "list_weights": ("featstore.weights", "list_weights"),
    "pull_weights": ("featstore.weights", "pull_weights"),
    "import_weights": ("featstore.weights", "import_weights"),
    "fit_head": ("featstore.fitting", "fit_head"),
    "evaluate": ("featstore.fitting", "evaluate"),
    "find_variant": ("featstore.precision", "find_variant"),
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
