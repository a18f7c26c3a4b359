"""Scoring new images with a head or a fine-tuned network (`score`, `predict`), and deployable
ONNX files (`export_head`)."""

from featstore.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "score": "jobs",
        "ScoreResult": "jobs",
        "ScoreOptions": "options",
        "predict": "arrays",
        "Predictions": "arrays",
        "load_predictor": "predictor",
        "read_predictions": "tables",
        "export_head": "deploy",
    },
)
