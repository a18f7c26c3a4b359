"""The one-line refusals of choosing, calibrating and ensembling heads: each names the option
and what to do, and nothing is saved."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import blobs, write_synthetic_set

from featstore import Store
from featstore.errors import HeadError, InvalidOptionError
from featstore.heads.thresholds import held_out
from featstore.store.head_files import list_heads, load_head


@pytest.fixture(scope="module")
def bugs(tmp_path_factory):
    root = tmp_path_factory.mktemp("choice") / "store"
    X, y = blobs(n_per_class=20, seed=5)
    X += np.random.default_rng(5).normal(0, 3, X.shape).astype(np.float32)
    write_synthetic_set(root, "bugs@tiny", X, y, ["ant", "bee", "cow"])
    return Store(root, emissions=False)


@pytest.mark.parametrize(
    "call,error,message",
    [
        (
            lambda s: s.fit_head("knn", "bugs@tiny", calibrate="temperature", select="val", val_size=0.0),
            HeadError,
            "^calibration needs held-out images: a validation part, or --select cv$",
        ),
        (
            lambda s: s.fit_head("all", "bugs@tiny", select="cv", use_augmented=True),
            InvalidOptionError,
            "^use_augmented: is not taken with --select cv",
        ),
        (
            lambda s: s.sweep("bugs@tiny", grid={"knn": {"k": [1]}}, ensemble=3),
            InvalidOptionError,
            "^ensemble: needs at least 2 fitted settings, but bugs@tiny has 1$",
        ),
        (
            lambda s: s.few_shot("sweep", "bugs@tiny", shots=[2], select="cv"),
            InvalidOptionError,
            "^select: few-shot sweeps choose on the validation part",
        ),
        (
            lambda s: s.few_shot("sweep", "bugs@tiny", shots=[2], calibrate="sigmoid"),
            InvalidOptionError,
            "^calibrate: few-shot runs save no heads",
        ),
        (
            lambda s: s.score("x", "p.csv", model="finetune:run", target_precision=0.9),
            InvalidOptionError,
            "^target_precision: is chosen on a head's held-out images; give --head$",
        ),
        (
            lambda s: s.extract("x", "tiny.onnx", views="flip", engine="ray"),
            InvalidOptionError,
            "^engine: ray makes no test-time views",
        ),
    ],
    ids=[
        "calibrate-no-val",
        "cv-augmented",
        "ensemble-of-one",
        "few-shot-cv",
        "few-shot-calibrate",
        "precision-of-a-model",
        "views-on-ray",
    ],  # fmt: skip
)
def test_refusals_name_the_option(bugs, call, error, message):
    before = list_heads(bugs.layout)
    with pytest.raises(error, match=message):
        call(bugs)
    assert list_heads(bugs.layout) == before


def test_an_ensemble_with_no_held_out_images_cannot_choose_a_threshold(bugs):
    a, b = (bugs.fit_head(k, "bugs@tiny", select="cv")[0].head_id for k in ("knn", "logistic"))
    vote = bugs.ensemble([a, b])
    estimator, meta = load_head(bugs.layout, vote.head_id)
    with pytest.raises(
        HeadError, match="has no validation part to choose a threshold on; give --reject-below"
    ):
        held_out(bugs.layout, vote.head_id, estimator, meta)
    proba, y, where = held_out(bugs.layout, a, *load_head(bugs.layout, a))  # a single head: out of fold
    assert where.startswith("training images, predicted out of fold") and proba.shape == (len(y), 3)
