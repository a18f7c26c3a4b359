"""The built-in head kinds, one module each, and the (scaler, classifier) pipeline the
scikit-learn kinds share. Registering a kind costs no scikit-learn import."""

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
