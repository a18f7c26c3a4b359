"""Heads on cached features: the head kinds, fitting and evaluating them, their metrics.

Modules: `kinds` (scikit-learn and Keras heads), `fitting` (fit-head, evaluate), `metrics`.
Imports `store`, `data`, `plots`, `emissions`, `errors`.
"""

from featstore.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "HEAD_KINDS": "kinds",
        "HeadConfig": "kinds",
        "build_head": "kinds",
        "fit_head": "fitting",
        "evaluate": "fitting",
        "FitResult": "fitting",
        "EvalResult": "fitting",
        "classification_metrics": "metrics",
    },
)
