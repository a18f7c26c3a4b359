"""Heads on cached features: the head-kind registry and each kind's parameters, fitting
(`fit_head`), sweeps (`featstore.sweep`), few-shot curves (`few_shot`), ensembles
(`featstore.ensemble`), evaluation (`evaluate`) and the metrics."""

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
        "make_params": "registry",
        "trainable_params": "registry",
        "HeadParams": "params",
        "SvmParams": "featstore.heads.kinds.svm",
        "LogisticParams": "featstore.heads.kinds.logistic",
        "DenseParams": "featstore.heads.kinds.dense",
        "KnnParams": "featstore.heads.kinds.knn",
        "SweepOptions": "options",
        "DenseHead": "dense",  # also the name old pickles of dense heads ask this package for
        "head_model": "onnx_graphs",
        "fit_head": "fitting",
        "SweepResult": "sweep",
        "few_shot": "fewshot",
        "FewShotResult": "fewshot",
        "EnsembleHead": "ensemble",
        "expand_grid": "grid",
        "DEFAULT_GRID": "grid",
        "evaluate": "evaluation",
        "FitResult": "results",
        "EvalResult": "results",
        "classification_metrics": "metrics",
    },
)
