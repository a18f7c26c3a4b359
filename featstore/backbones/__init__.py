"""Backbones: the registry of names users type, the catalog of their figures and official
ImageNet weight files, downloading and checking those files, and the ONNX export.

Modules: `registry` (specs and recipes), `catalog` (figures, `catalog.json`), `weights` and
`downloads` (Keras' cache), `export` (TensorFlow + tf2onnx, imported only to export). Imports
`store`, `runtime`, `errors` and `files`.
"""

from featstore.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "BackboneSpec": "registry",
        "BackboneRecipe": "registry",
        "register_backbone": "registry",
        "get_backbone": "registry",
        "available_backbones": "registry",
        "resolve_recipe": "registry",
        "list_backbones": "catalog",
        "load_catalog": "catalog",
        "ensure_weights": "weights",
        "list_weights": "weights",
        "pull_weights": "weights_pull",
        "import_weights": "weights",
        "weights_status": "weights",
        "ExportedBackbone": "export",
        "ensure_backbone": "export",
    },
)
