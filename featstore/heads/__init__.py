"""Heads on cached features: the head-kind registry, fitting and evaluating heads, their metrics.

Modules: `registry` (HeadKind, register/get/list kinds, parameter counts), `options`
(HeadConfig), `kinds` (the built-in svm, logistic, dense and knn), `dense` (the Keras head),
`ensemble` (soft voting of saved heads, the `ensemble` kind), `onnx_graphs` (a head as an ONNX
graph), `training_data` (joined feature sets), `fitting` (fit-head), `grid` (a sweep's
settings), `trials` (many settings on one split), `sweep` (fit-head sweep), `fewshot` (few-shot
curves), `dispatch` (what `fit-head KIND` runs), `saved` (what every saved head carries),
`evaluation` (evaluate), `results`, `metrics`.
Imports `store`, `data`, `jobs`, `plots`, `cards`, `emissions`, `files`, `deps`, `options`,
`errors`.
"""

from featstore.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "HeadKind": "registry",
        "FitContext": "registry",
        "register_head_kind": "registry",
        "unregister_head_kind": "registry",
        "get_head_kind": "registry",
        "available_head_kinds": "registry",
        "head_params": "registry",
        "HeadConfig": "options",
        "build_head": "kinds",
        "DenseHead": "dense",  # also the name old pickles of dense heads ask this package for
        "head_model": "onnx_graphs",
        "fit_head": "fitting",
        "fit_options": "fitting",
        "fit_heads": "dispatch",
        "SweepOptions": "sweep",
        "SweepResult": "sweep",
        "few_shot": "fewshot",
        "FewShotResult": "fewshot",
        "fit_ensemble": "ensemble",
        "EnsembleHead": "ensemble",
        "expand_grid": "grid",
        "DEFAULT_GRID": "grid",
        "evaluate": "evaluation",
        "FitResult": "results",
        "EvalResult": "results",
        "classification_metrics": "metrics",
    },
)
