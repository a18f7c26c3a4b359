"""`featstore backbones`, and the tool that recomputes `catalog.json` from the networks
(`python -m featstore.backbones.catalog [NAME ...]`)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

from featstore.backbones.applications import CATALOG_PATH, available_backbones, get_backbone, load_catalog
from featstore.deps import require
from featstore.options import Record


@dataclass
class BackboneInfo(Record):
    """One row of `featstore backbones` (native input size, average pooling)."""

    name: str
    keras_name: str
    input_size: int
    n_features: int | None
    n_params: int | None
    gflops: float | None
    preprocess: str
    imagenet: str
    weights_file: str
    weights_mb: float | None


def list_backbones() -> list[BackboneInfo]:
    """Describe every registered backbone, with the state of its ImageNet weights in Keras' cache."""
    from featstore.backbones.weights import weights_status

    catalog = load_catalog()
    rows = []
    for name in available_backbones():
        spec = get_backbone(name)
        figures = catalog.get(name, {})
        size = figures.get("weights", {}).get("size")
        rows.append(
            BackboneInfo(
                name=name,
                keras_name=spec.keras_name,
                input_size=spec.input_size,
                n_features=figures.get("n_features"),
                n_params=figures.get("n_params"),
                gflops=figures.get("gflops"),
                preprocess=spec.preprocess,
                imagenet=weights_status(name).state,
                weights_file=spec.weights_file,
                weights_mb=None if size is None else round(size / 1e6, 1),
            )
        )
    return rows


def compute_entry(name: str, input_size: int | None = None) -> dict:
    """Build backbone `name` (random weights) and count its features, parameters and GFLOPs."""
    from featstore.backbones.export import build_keras_backbone, count_flops
    from featstore.backbones.recipes import BackboneRecipe

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


def keras_weights_record(name: str) -> dict:
    """Read the official no-top weight file of backbone `name` from Keras' own application code:
    file name, origin URL, md5 or sha256 (the size is not in Keras' code)."""
    keras = require("keras")
    from keras.src.utils import file_utils

    spec = get_backbone(name)
    seen = {}

    class _Seen(Exception):
        pass

    def fake_get_file(fname=None, origin=None, file_hash=None, **_):
        seen.update(file=fname, origin=origin, hash=file_hash)
        raise _Seen

    real = file_utils.get_file
    file_utils.get_file = fake_get_file
    try:
        size = spec.input_size
        getattr(keras.applications, spec.keras_name)(
            weights="imagenet", include_top=False, input_shape=(size, size, 3)
        )
    except _Seen:
        pass
    finally:
        file_utils.get_file = real
    digest = seen.get("hash")
    seen["hash_algorithm"] = None if digest is None else ("sha256" if len(digest) == 64 else "md5")
    return seen


def main(argv: list[str]) -> None:
    """Recompute the catalog file for the named backbones (all when none are named)."""
    import gc

    catalog = load_catalog()
    for name in argv or available_backbones():
        size = catalog.get(name, {}).get("weights", {}).get("size")
        catalog[name] = compute_entry(name)
        catalog[name]["weights"] = {**keras_weights_record(name), "size": size}
        sys.stderr.write(f"{name}: {catalog[name]}\n")
        CATALOG_PATH.write_text(json.dumps(catalog, indent=1, sort_keys=True) + "\n")
        require("keras").backend.clear_session()
        gc.collect()


if __name__ == "__main__":
    main(sys.argv[1:])
