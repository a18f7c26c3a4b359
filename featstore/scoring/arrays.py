"""`predict`: class probabilities of images as arrays, with no table, job folder or run-log line."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import NamedTuple

import numpy as np

from featstore.data.options import DecodeOptions, hw
from featstore.errors import InvalidOptionError
from featstore.inference.options import InferenceOptions
from featstore.reporter import SILENT, Reporter
from featstore.scoring.inputs import items_of, list_inputs
from featstore.scoring.predictor import Predictor, load_predictor
from featstore.scoring.stage_outputs import Row, StageOutputs, compute_outputs
from featstore.store.layout import StoreLayout, resolve_store
from featstore.store.run_files import PREFIX

#: Rows whose probabilities are computed at a time (bounds the float64 working copy).
PROBA_ROWS = 4096

Images = str | os.PathLike | Iterable[str | os.PathLike] | np.ndarray


class Predictions(NamedTuple):
    """What `predict` returns, row-aligned with the images: `proba` (n_images, n_classes) float32
    (NaN rows for unreadable images), `class_names` naming its columns, `errors` (None for a
    scored image) and `paths` (as given or listed; None for rows of a pixel array)."""

    proba: np.ndarray
    class_names: list[str]
    errors: list[str | None]
    paths: list[str | None]


def _predictor(model: str | Predictor, layout: StoreLayout) -> Predictor:
    if isinstance(model, Predictor):
        return model
    if not isinstance(model, str):
        raise InvalidOptionError("model", f"must be a head id or finetune:<run-id>, not {model!r}")
    if model.startswith(PREFIX):
        return load_predictor(layout, model=model)
    return load_predictor(layout, head=model)


def _pixel_rows(outputs: StageOutputs, pixels: np.ndarray) -> list[Row]:
    """Compute the stage outputs of a pixel array in batches; one row per image."""
    h, w = hw(outputs.predictor.input_size)
    if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[1:] != (h, w, 3):
        raise InvalidOptionError(
            "images",
            f"a pixel array must be (n_images, {h}, {w}, 3) uint8 (the model's input size), "
            f"not {pixels.shape} {pixels.dtype}",
        )
    if outputs.inference.engine == "ray":
        raise InvalidOptionError("engine", "a pixel array is scored here; the ray engine reads image files")
    keys = [f"pixels:{i}" for i in range(len(pixels))]
    for start in range(0, len(pixels), outputs.batch_size):
        stop = start + outputs.batch_size
        outputs.compute(list(zip(keys[start:stop], pixels[start:stop], strict=True)))
    return [(None, k, None) for k in keys]


def predict(
    model: str | Predictor,
    images: Images,
    *,
    store: str | os.PathLike | StoreLayout | None = None,
    inference: InferenceOptions = InferenceOptions(),
    decode: DecodeOptions = DecodeOptions(),
    use_store: bool = True,
    reporter: Reporter = SILENT,
) -> Predictions:
    """Return the class probabilities a head (or fine-tune run) gives each image, as arrays.

    Parameters
    ----------
    model
        A head id, `finetune:<run-id>`, or a loaded `Predictor`.
    images
        A folder, a .csv or .txt list, a glob or one image (as `score` reads them); a sequence
        of paths (one row each, in order); or an (n_images, S, S, 3) uint8 array at the
        model's input size.
    store, inference, decode
        The store (default `$FEATSTORE_HOME`, else ./store); device, batch size, threads,
        runtime, engine; the decoder and decode threads (images resized as at extraction).
    use_store, reporter
        Reuse the stored features of images of the head's backbone; `progress(done, total)`.

    Returns
    -------
    Predictions
        `proba` (n_images, n_classes) float32, `class_names`, `errors`, `paths`; nothing written.

    Raises
    ------
    InvalidOptionError
        A bad option value, or a pixel array of the wrong shape or dtype.
    UnknownHeadError, UnknownRunError, StoreError
        No such head or run; a backbone ONNX file it needs is missing.
    DatasetError
        A folder, list or glob that is missing or holds no image.
    """
    inference, decode = inference.check(), decode.check()
    layout = resolve_store(store)
    predictor = _predictor(model, layout)
    outputs = StageOutputs(layout, predictor, inference, reporter=reporter)
    try:
        if isinstance(images, np.ndarray):
            rows = _pixel_rows(outputs, images)
        else:
            items = list_inputs(images)[0] if isinstance(images, str | os.PathLike) else items_of(images)
            outputs.open_sources(force=not use_store)
            rows = compute_outputs(outputs, items, decode)[0]
        proba = np.empty((len(rows), len(predictor.class_names)), dtype=np.float32)
        for start in range(0, len(rows), PROBA_ROWS):
            chunk = rows[start : start + PROBA_ROWS]
            proba[start : start + len(chunk)] = outputs.proba(chunk)
    finally:
        outputs.close()
    return Predictions(proba, list(predictor.class_names), [r[2] for r in rows], [r[0] for r in rows])
