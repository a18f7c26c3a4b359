"""`featstore finetune`: networks trained end to end with TensorFlow, from ImageNet weights or from
scratch, saved as runs whose backbone the rest of featstore reuses."""

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
