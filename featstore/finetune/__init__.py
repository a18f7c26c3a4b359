"""`featstore finetune`: networks trained end to end with TensorFlow, from ImageNet weights or
from scratch, saved as runs whose backbone the rest of featstore reuses.

Modules, in the order a run goes through them: `options` (the options objects and the stored
config), `prepare` (checks before any long work), `run` (`finetune()`: the claim and the job),
`session` (one training session), `networks` (Keras graphs), `training` (fit loop,
checkpoints), `evaluation` (ONNX exports, metrics, pictures), `results` (report files, run
record, result). The package imports `heads.metrics` (its only sibling), `backbones`, `store`,
`data` and the bottom modules (`jobs`, `runtime`, `plots`, `cards`, `emissions`, `files`, `deps`,
`errors`, `options`); this `__init__` imports only `lazy`.
"""

from featstore.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "finetune": "run",
        "FinetuneResult": "results",
        "FinetuneConfig": "options",
        "FinetuneOptions": "options",
        "NetworkOptions": "options",
        "TrainingOptions": "options",
    },
)
