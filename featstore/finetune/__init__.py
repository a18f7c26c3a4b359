"""`featstore finetune`: networks trained end to end with TensorFlow, from ImageNet weights or
from scratch, saved as runs whose backbone the rest of featstore reuses.

Modules: `run` (the command), `networks` (Keras graphs), `training` (fit loop, checkpoints).
Imports `heads` (metrics), `backbones`, `store`, `data`, `runtime`, `plots`, `emissions`.
"""

from featstore.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__, {"finetune": "run", "FinetuneConfig": "run", "FinetuneResult": "run"}
)
