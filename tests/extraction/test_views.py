"""Test-time views: `extract --views flip,crops5` stores, per image, the mean of the features of
the image and its views, as a feature set of its own whose rows are never taken for plain
features (scoring's cache, a head's backbone check); heads fitted on it refuse to score."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_class_folders, via_store
from PIL import Image
from typer.testing import CliRunner

from featstore import Store
from featstore.data.views import parse_views, view_stack
from featstore.errors import HeadError, InvalidOptionError, StoreMismatchError
from featstore_cli.app import app

extract = via_store("extract")


def test_the_views_of_an_image():
    px = np.arange(20 * 24 * 3, dtype=np.uint8).reshape(20, 24, 3)
    stack = view_stack(px, ("flip", "crops5"))
    assert stack.shape == (7, 20, 24, 3) and (stack[0] == px).all() and (stack[1] == px[:, ::-1]).all()
    assert parse_views("crops5, flip") == ("flip", "crops5") and parse_views(None) == ()
    with pytest.raises(InvalidOptionError, match="views: unknown view 'rotate'; choose from flip, crops5"):
        parse_views("flip,rotate")


def test_a_views_set_holds_the_mean_of_each_images_views(tmp_path, tiny_onnx):
    photos = make_class_folders(tmp_path / "pets", n_per_class=10)
    mirrored = tmp_path / "mirrored" / "pets"
    for path in photos.rglob("*.jpg"):  # the same images, mirrored after the backbone's resize
        out = mirrored / path.relative_to(photos).with_suffix(".png")
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(
            np.asarray(Image.open(path).convert("RGB").resize((16, 16), Image.BILINEAR))[:, ::-1]
        ).save(out)
    store = Store(tmp_path / "store", emissions=False)
    plain = store.extract(photos, str(tiny_onnx), resize="squash")
    views = store.extract(photos, str(tiny_onnx), resize="squash", views="flip")
    flipped = store.extract(mirrored, str(tiny_onnx), resize="squash", name="mirrored")
    assert views.feature_set == "pets@tiny-views-flip" and views.n_computed == plain.n_computed == 20
    a, b, m = (store.feature_set(r.feature_set) for r in (plain, flipped, views))
    order = {p.rsplit(".", 1)[0]: i for i, p in enumerate(b.paths)}
    mirror = b.features[[order[p.rsplit(".", 1)[0]] for p in a.paths]]
    np.testing.assert_allclose(m.features, (a.features + mirror) / 2, atol=1e-5)
    assert m.attrs["views"] == ["flip"] and m.attrs["backbone_digest"] != a.attrs["backbone_digest"]
    again = store.extract(photos, str(tiny_onnx), resize="squash", views="flip")
    assert again.n_computed == 0 and again.n_reused == 20  # the cache works on views sets too
    # a head of the views set: evaluated on it, refused on plain features, refused by score
    (head,) = store.fit_head("logistic", views.feature_set, select="val")
    with pytest.raises(StoreMismatchError):
        store.evaluate(head.head_id, plain.feature_set)
    with pytest.raises(HeadError, match="was fitted on test-time views"):
        store.score(photos, tmp_path / "p.csv", head=head.head_id)
    out = CliRunner().invoke(
        app, ["extract", "--backbone", str(tiny_onnx), "--data", str(photos), "--store", str(tmp_path / "store"),
              "--views", "flip", "--augment", "flip", "--copies", "1", "--no-emissions"],
    )  # fmt: skip
    assert out.exit_code == 1 and out.stderr.startswith("Error: --views: test-time views and augmented")
