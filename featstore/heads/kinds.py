"""The built-in head kinds fitted on features, one registration each: svm, logistic, dense and knn.

svm, logistic and knn are scikit-learn pipelines (scaler, classifier); dense is a small Keras
network (`featstore.heads.dense`). Each registration says how the kind is built from a
`HeadConfig`, fitted, converted to ONNX (`featstore.heads.onnx_graphs`) and how its trained
parameters are counted. Never reads or writes the store.

Imports `registry`, `options` and `errors`; scikit-learn, the dense head (Keras) and the ONNX
converters only inside the functions that need them, so registering costs nothing.
"""

from __future__ import annotations

from featstore.errors import HeadError, InvalidOptionError
from featstore.heads.options import HeadConfig, make_scaler
from featstore.heads.registry import FitContext, HeadKind, register_head_kind

#: The C grid the logistic head searches by 3-fold cross-validation when none is given.
LOGISTIC_C = (0.01, 0.1, 1.0, 10.0)
#: The svm's C when none is given, per kernel.
SVM_C = {"rbf": (10.0,), "linear": (0.001,)}


def __getattr__(name: str):
    if name == "DenseHead":  # heads pickled as featstore.heads.kinds.DenseHead still load
        from featstore.heads.dense import DenseHead

        return DenseHead
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _pipeline(config: HeadConfig, clf):
    from sklearn.pipeline import Pipeline

    return Pipeline([("scale", make_scaler(config.scale)), ("clf", clf)])


def _attach_pipeline_scaler(estimator, scaler, scale: str) -> None:
    """The pipeline's scaling step becomes `scaler` (fitted; see `HeadKind.attach_scaler`)."""
    estimator.steps[0] = ("scale", scaler)


def _last_step(estimator):
    from sklearn.pipeline import Pipeline

    return estimator.steps[-1][1] if isinstance(estimator, Pipeline) else None


def _onnx(name: str):
    """The converter `name` of `onnx_graphs`, imported when an export calls it."""

    def convert(estimator, n_features: int, opset: int):
        from featstore.heads import onnx_graphs

        return getattr(onnx_graphs, name)(estimator, n_features, opset)

    return convert


# ---------------------------------------------------------------- svm


def _build_svm(config: HeadConfig, context: FitContext):
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.svm import SVC, LinearSVC

    folds = min(3, context.min_per_class)
    if folds < 2:
        raise HeadError(
            "svm calibrates its probabilities by cross-validation and needs at least 2 training "
            f"images of every class (one class has {context.min_per_class}); add images or use logistic"
        )
    c = config.C[0]
    weight = config.class_weight
    base = (
        LinearSVC(C=c, dual=False, class_weight=weight, random_state=config.random_state)
        if config.kernel == "linear"
        else SVC(kernel="rbf", C=c, gamma="scale", class_weight=weight, random_state=config.random_state)
    )
    return _pipeline(config, CalibratedClassifierCV(base, method="sigmoid", cv=folds, n_jobs=context.n_jobs))


def _check_svm(config: HeadConfig) -> None:
    if len(config.C) > 1:
        raise InvalidOptionError("C", "svm takes one value; the logistic head searches a grid of C")


def _is_svm(estimator) -> bool:
    from sklearn.calibration import CalibratedClassifierCV

    return isinstance(_last_step(estimator), CalibratedClassifierCV)


register_head_kind(
    HeadKind(
        "svm",
        build=_build_svm,
        options=("scale", "C", "kernel", "class_weight"),
        default_C=lambda config: SVM_C[config.kernel],
        check=_check_svm,
        to_onnx=_onnx("sklearn_graph"),
        owns=_is_svm,
        attach_scaler=_attach_pipeline_scaler,
        probabilities="are calibrated on held-out folds (sigmoid).",
    )
)

# ---------------------------------------------------------------- logistic


def _build_logistic(config: HeadConfig, context: FitContext):
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV

    folds = min(3, context.min_per_class)
    C = config.C
    if len(C) == 1 or folds < 2:
        c = C[0] if len(C) == 1 else sorted(C)[len(C) // 2]
        clf = LogisticRegression(
            C=c, max_iter=1000, class_weight=config.class_weight, random_state=config.random_state
        )
    else:
        clf = LogisticRegressionCV(
            Cs=list(C),
            cv=folds,
            max_iter=1000,
            n_jobs=context.n_jobs,
            scoring="accuracy",
            l1_ratios=(0.0,),
            use_legacy_attributes=False,
            class_weight=config.class_weight,
            random_state=config.random_state,
        )
    return _pipeline(config, clf)


def _logistic_params(config: dict, n_features: int, n_classes: int) -> int:
    return (n_features + 1) * (1 if n_classes == 2 else n_classes)


def _is_logistic(estimator) -> bool:
    from sklearn.linear_model import LogisticRegression

    return isinstance(_last_step(estimator), LogisticRegression)


register_head_kind(
    HeadKind(
        "logistic",
        build=_build_logistic,
        options=("scale", "C", "class_weight"),
        default_C=lambda config: LOGISTIC_C,
        c_grid=True,
        to_onnx=_onnx("sklearn_graph"),
        count_params=_logistic_params,
        owns=_is_logistic,
        attach_scaler=_attach_pipeline_scaler,
    )
)

# ---------------------------------------------------------------- dense


def _build_dense(config: HeadConfig, context: FitContext):
    from featstore.heads.dense import DenseHead

    return DenseHead(
        hidden=tuple(config.hidden),
        dropout=config.dropout,
        epochs=config.epochs,
        learning_rate=config.learning_rate,
        patience=config.patience,
        scale=config.scale,
        class_weight=config.class_weight,
        random_state=config.random_state,
    )


def _fit_dense(estimator, X, y, X_val, y_val) -> None:
    estimator.fit(X, y, X_val, y_val)  # early stopping on the validation rows


def _attach_dense_scaler(estimator, scaler, scale: str) -> None:
    estimator.scale, estimator.scaler_ = scale, scaler


def _dense_params(config: dict, n_features: int, n_classes: int) -> int:
    sizes = [n_features, *config.get("hidden", []), n_classes]
    return sum((a + 1) * b for a, b in zip(sizes, sizes[1:], strict=False))


def _is_dense(estimator) -> bool:
    from featstore.heads.dense import DenseHead

    return isinstance(estimator, DenseHead)


register_head_kind(
    HeadKind(
        "dense",
        build=_build_dense,
        options=("scale", "hidden", "dropout", "epochs", "learning_rate", "patience", "class_weight"),
        fit=_fit_dense,
        to_onnx=_onnx("dense_graph"),
        count_params=_dense_params,
        owns=_is_dense,
        attach_scaler=_attach_dense_scaler,
        parallel=False,
    )
)

# ---------------------------------------------------------------- knn


def _build_knn(config: HeadConfig, context: FitContext):
    from sklearn.neighbors import KNeighborsClassifier

    k = min(config.k, context.n_train) if context.n_train else config.k
    return _pipeline(
        config,
        KNeighborsClassifier(n_neighbors=k, metric="cosine", weights="distance", n_jobs=context.n_jobs),
    )


def _is_knn(estimator) -> bool:
    from sklearn.neighbors import KNeighborsClassifier

    return isinstance(_last_step(estimator), KNeighborsClassifier)


register_head_kind(
    HeadKind(
        "knn",
        build=_build_knn,
        options=("scale", "k"),
        default_scale="none",
        to_onnx=_onnx("knn_graph"),
        owns=_is_knn,
        attach_scaler=_attach_pipeline_scaler,
    )
)


def build_head(config: HeadConfig, n_jobs: int = 1, n_train: int | None = None, min_per_class: int = 3):
    """Return an unfitted estimator for `config` (scikit-learn API: fit, predict, predict_proba).

    `config.kind` names the kind; its defaults are filled in (`HeadConfig.for_kind`).
    `n_train` (training rows) caps knn's k; `min_per_class` (fewest training rows of one class)
    caps the folds of logistic's C search and of the svm's probability calibration at 3.

    Raises
    ------
    HeadError
        Unknown kind, or training rows the kind cannot use (the svm needs 2 training images of
        every class to calibrate its probabilities).
    InvalidOptionError
        An option value out of range.
    """
    from featstore.heads.registry import get_head_kind

    if config.kind is None:
        raise HeadError("build_head needs a HeadConfig with a kind")
    config = config.for_kind(config.kind)
    return get_head_kind(config.kind).build(config, FitContext(n_jobs, n_train, min_per_class))
