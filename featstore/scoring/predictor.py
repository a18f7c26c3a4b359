"""What scoring applies to pixels: a head with the ONNX backbones it was trained on, or a fine-tune
run's classifier, as stages with cache tags and the step to class probabilities."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from featstore.backbones.export import ExportedBackbone, find_backbone_by_digest
from featstore.data.options import Size
from featstore.errors import DatasetError, HeadError, InvalidOptionError, StoreError
from featstore.scoring.options import check_one_model
from featstore.store.head_files import load_head
from featstore.store.layout import StoreLayout
from featstore.store.run_files import CLASSIFIER_FILE, parse_ref, run_file

#: Rows given to a head at a time, so memory stays bounded on any number of images.
PREDICT_ROWS = 4096


@dataclass(frozen=True)
class Stage:
    """One ONNX network a predictor runs on pixels: (N, S, S, 3) uint8 -> (N, n_outputs) float32.

    `cache_tag` (`<backbone digest>:<resize>:float32`) says which stored rows hold its outputs;
    `runtime`, `precision` and `settings` say what computed the head's features and how.
    """

    path: Path
    label: str
    digest: str
    cache_tag: str
    n_outputs: int
    runtime: str = "any"
    precision: str = "fp32"
    settings: dict | None = None


@dataclass
class Predictor:
    """A head or fine-tune run ready to score: its stages, and `predict_proba(outputs)` taking one
    (N, n_outputs) float32 array per stage to (N, len(class_names)) float64 probabilities."""

    name: str
    kind: str
    class_names: list[str]
    input_size: Size
    resize: str
    stages: list[Stage]
    estimator: object = None
    backbones: list[ExportedBackbone] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    @property
    def identity(self) -> str:
        """What decides the probabilities: the head id and its files, or the run's classifier."""
        files = self.meta.get("files_sha256", {})
        return json.dumps({"name": self.name, "files": files, "stages": [s.cache_tag for s in self.stages]})

    def predict_proba(self, outputs: list[np.ndarray]) -> np.ndarray:
        """Return (N, n_classes) float64 probabilities from the stage outputs (N, n_outputs) each."""
        if self.kind == "finetune":
            return np.asarray(outputs[0], dtype=np.float64)
        # float64, as the exported graph computes scikit-learn heads: features are float32 values,
        # so nothing is lost, and near-duplicate images (cosine distances near float32 rounding)
        # get the same k-NN weights in both
        X = np.hstack([np.asarray(o, dtype=np.float64) for o in outputs])
        out = np.zeros((len(X), len(self.class_names)))
        if not len(X):
            return out
        cols = np.asarray(self.estimator.classes_, dtype=int)
        for start in range(0, len(X), PREDICT_ROWS):
            block = X[start : start + PREDICT_ROWS]
            out[start : start + len(block), cols] = self.estimator.predict_proba(block)
        return out


def _head_predictor(layout: StoreLayout, head: str) -> Predictor:
    from featstore.store.head_files import read_meta

    meta = read_meta(layout, head)
    sources = meta.get("sources") or []
    if not sources:
        raise StoreError(f"head {head} names no feature set in its meta.json; it cannot score images")
    sizes = {(s.get("input_size"), s.get("input_width")) for s in sources}
    resizes = {s.get("resize") or "squash" for s in sources}
    if len(sizes) > 1 or len(resizes) > 1:
        raise DatasetError(
            f"head {head} joins backbones fed at different input sizes or resize policies "
            f"({', '.join(str(s) for s in sorted(sizes, key=str))}); featstore scores and exports heads "
            "whose backbones share one input size and resize"
        )
    resize = resizes.pop()
    backbones, stages = [], []
    for s in sources:
        if s.get("views"):
            raise HeadError(
                f"head {head} was fitted on test-time views ({s.get('feature_set')}: the mean of "
                f"{', '.join(['the image', *s['views']])}); score and export run plain images, so fit "
                "the head for them on the plain feature set"
            )
        found = find_backbone_by_digest(layout, s["backbone_digest"])
        variant = None
        if found is None and s.get("precision", "fp32") != "fp32":  # an int8, fp16 or bf16 model
            from featstore.inference.variants import find_variant

            variant = find_variant(layout, s["backbone_digest"])
            found = find_backbone_by_digest(layout, variant.base_digest) if variant else None
        if found is None:
            raise StoreError(
                f"head {head} needs backbone {s.get('backbone')} (digest {s['backbone_digest'][:12]}), "
                f"but its ONNX file is missing from {layout.backbones} (or changed); run the "
                f"`featstore extract` that made {s.get('feature_set')} again to re-export it"
            )
        backbones.append(found)
        path, digest = (variant.path, variant.digest) if variant else (found.path, found.digest)
        how = (variant.runtime, variant.precision, variant.settings) if variant else ()
        stages.append(
            Stage(
                path,
                s.get("backbone") or found.recipe.label,
                digest,
                f"{digest}:{resize}:float32",
                found.n_features,
                *how,
            )
        )
    estimator, meta = load_head(layout, head)
    return Predictor(
        name=head,
        kind="head",
        class_names=list(meta["class_names"]),
        input_size=backbones[0].recipe.size,
        resize=resize,
        stages=stages,
        estimator=estimator,
        backbones=backbones,
        meta=meta,
    )


def _finetune_predictor(layout: StoreLayout, run_id: str) -> Predictor:
    from featstore.files import sha256_file

    path, meta = run_file(layout, run_id, CLASSIFIER_FILE)
    classes = list(meta.get("classes") or [])
    if not classes or not meta.get("input_size"):
        raise StoreError(f"fine-tune run {run_id}: meta.json lacks its classes or input_size")
    digest = sha256_file(path)
    resize = meta.get("resize") or "squash"
    stage = Stage(path, f"finetune:{run_id}", digest, f"finetune:{digest}:{resize}:float32", len(classes))
    return Predictor(
        name=f"finetune:{run_id}",
        kind="finetune",
        class_names=classes,
        input_size=int(meta["input_size"]),
        resize=resize,
        stages=[stage],
        meta=meta,
    )


def load_predictor(layout: StoreLayout, head: str | None = None, model: str | None = None) -> Predictor:
    """Return the predictor of head `head` or fine-tune run `model` (`finetune:<run-id>`), exactly
    one (InvalidOptionError otherwise); UnknownHeadError or UnknownRunError when it is not in the
    store, StoreError when a backbone file is missing or a model file changed since it was saved."""
    check_one_model(head, model)
    if head is not None:
        return _head_predictor(layout, head)
    run_id = parse_ref(model)
    if run_id is None:
        raise InvalidOptionError(
            "model", f"{model!r} is not a fine-tune run; write finetune:<run-id>, or give a head id as head"
        )
    return _finetune_predictor(layout, run_id)
