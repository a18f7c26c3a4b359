"""`featstore extract`: images -> backbone -> feature set, resumable and cached by content.

Module: `job`. Imports `inference`, `backbones`, `store`, `data`, `runtime`, `emissions`.
"""

from featstore.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {"extract": "job", "ExtractResult": "job"})
