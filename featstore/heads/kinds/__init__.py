"""The built-in head kinds, one module each: `svm`, `logistic`, `dense`, `knn` and `ensemble`.

Each module declares its kind's parameters (a `HeadParams` dataclass) and registers the kind
(`featstore.heads.registry`); importing one costs no scikit-learn. The helpers here are what
the scikit-learn kinds share: a (scaler, classifier) pipeline and its ONNX conversion.
"""

from __future__ import annotations

from featstore.heads.params import make_scaler


def __getattr__(name: str):
    if name == "DenseHead":  # heads pickled as featstore.heads.kinds.DenseHead still load
        from featstore.heads.dense import DenseHead

        return DenseHead
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def pipeline(scale: str, clf):
    """The estimator of a scikit-learn kind: features scaled by `scale`, then `clf`."""
    from sklearn.pipeline import Pipeline

    return Pipeline([("scale", make_scaler(scale)), ("clf", clf)])


def attach_pipeline_scaler(estimator, scaler, scale: str) -> None:
    """The pipeline's scaling step becomes `scaler` (fitted; see `HeadKind.attach_scaler`)."""
    estimator.steps[0] = ("scale", scaler)


def last_step(estimator):
    """The classifier of a pipeline (None for another estimator)."""
    from sklearn.pipeline import Pipeline

    return estimator.steps[-1][1] if isinstance(estimator, Pipeline) else None


def onnx_converter(name: str):
    """The converter `name` of `featstore.heads.onnx_graphs`, imported when an export calls it."""

    def convert(estimator, n_features: int, opset: int):
        from featstore.heads import onnx_graphs

        return getattr(onnx_graphs, name)(estimator, n_features, opset)

    return convert
