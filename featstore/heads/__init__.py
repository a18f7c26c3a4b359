"""Heads on cached features: the head-kind registry and each kind's parameters, fitting
(`fit_head`), sweeps (`featstore.sweep`), few-shot curves (`few_shot`), ensembles
(`featstore.ensemble`), evaluation (`evaluate`) and the metrics."""


def __getattr__(name: str):
    if name == "DenseHead":  # heads pickled as featstore.heads.DenseHead still load
        from featstore.heads.dense import DenseHead

        return DenseHead
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
