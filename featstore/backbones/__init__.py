"""Backbones: the Keras applications by name, backbone sources and recipes, their official ImageNet
weight files (state, downloads, imports) and the ONNX export."""

from featstore.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "BackboneOptions": "options",
        "BackboneSpec": "applications",
        "register_backbone": "applications",
        "get_backbone": "applications",
        "available_backbones": "applications",
        "BackboneRecipe": "recipes",
        "BackboneSource": "recipes",
        "register_source": "recipes",
        "resolve_recipe": "recipes",
        "list_backbones": "catalog",
        "ensure_weights": "fetching",
        "pull_weights": "fetching",
        "import_weights": "fetching",
        "list_weights": "weights",
        "weights_status": "weights",
        "ExportedBackbone": "export",
        "ensure_backbone": "export",
    },
)
