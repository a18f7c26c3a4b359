"""Scoring new images with a head or a fine-tuned network, and deployable ONNX files.

Modules: `jobs` (featstore score), `options`, `inputs`, `stage_outputs`, `arrays` (predict:
probabilities as arrays), `predictor` (backbone + head in memory), `tables` (prediction files),
`deploy` (featstore export). Imports `heads`, `inference`, `backbones`, `store`, `data`.
"""

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
