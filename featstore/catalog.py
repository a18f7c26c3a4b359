"""The backbone catalog: input size, feature dimension, parameters and GFLOPs of each backbone.

The figures are computed from the Keras networks themselves (`compute_entry`, TensorFlow) and
kept in `featstore/data/backbones.json`, so `featstore backbones` answers without importing
TensorFlow. Regenerate with `python -m featstore.catalog`; a test recomputes a sample.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from featstore.backbones import available_backbones, get_backbone, imagenet_weights_path

CATALOG_PATH = Path(__file__).parent / "data" / "backbones.json"


@dataclass
class BackboneInfo:
    """One row of `featstore backbones` (native input size, average pooling)."""

    name: str
    keras_name: str
    input_size: int
    n_features: int | None
    n_params: int | None
    gflops: float | None
    preprocess: str
    imagenet_local: bool
    weights_file: str

    def to_dict(self) -> dict:
        """Return a JSON-ready dict."""
        return asdict(self)


def load_catalog() -> dict[str, dict]:
    """Return the computed figures per backbone name (empty if the file is missing)."""
    try:
        return json.loads(CATALOG_PATH.read_text())
    except (OSError, ValueError):
        return {}


def list_backbones() -> list[BackboneInfo]:
    """Describe every registered backbone, with whether its ImageNet weights are cached here."""
    catalog = load_catalog()
    rows = []
    for name in available_backbones():
        spec = get_backbone(name)
        figures = catalog.get(name, {})
        rows.append(
            BackboneInfo(
                name=name,
                keras_name=spec.keras_name,
                input_size=spec.input_size,
                n_features=figures.get("n_features"),
                n_params=figures.get("n_params"),
                gflops=figures.get("gflops"),
                preprocess=spec.preprocess,
                imagenet_local=imagenet_weights_path(spec).is_file(),
                weights_file=spec.weights_file,
            )
        )
    return rows


def compute_entry(name: str, input_size: int | None = None) -> dict:
    """Build backbone `name` (random weights) and count its features, parameters and GFLOPs."""
    from featstore.backbones import BackboneRecipe
    from featstore.export import build_keras_backbone, count_flops

    spec = get_backbone(name)
    size = input_size or spec.input_size
    recipe = BackboneRecipe(
        "registry", spec.name, size, "none", None, None, "avg", preprocess=spec.preprocess
    )
    model, _ = build_keras_backbone(recipe)
    return {
        "input_size": size,
        "n_features": int(model.output.shape[-1]),
        "n_params": int(model.count_params()),
        "gflops": round(count_flops(model) / 1e9, 3),
    }


def main(argv: list[str]) -> None:
    """Recompute the catalog file for the named backbones (all when none are named)."""
    import gc

    catalog = load_catalog()
    for name in argv or available_backbones():
        catalog[name] = compute_entry(name)
        sys.stderr.write(f"{name}: {catalog[name]}\n")
        CATALOG_PATH.write_text(json.dumps(catalog, indent=1, sort_keys=True) + "\n")
        from featstore.deps import require

        require("keras").backend.clear_session()
        gc.collect()


if __name__ == "__main__":
    main(sys.argv[1:])
