"""Augmented views: each transform, determinism, reflected borders, the option parser, cache keys."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import write_image

from featstore.data.augment import augment, row_keys, view_key, view_seed
from featstore.data.decode import decode_image
from featstore.data.options import AUGMENTATIONS, AugmentConfig, AugmentOptions, parse_augment
from featstore.errors import DatasetError, InvalidOptionError, StoreError

DIGEST = "ab" * 32


@pytest.fixture(scope="module")
def pixels(tmp_path_factory) -> np.ndarray:
    """A real decoded JPEG, 32 x 32 RGB uint8."""
    path = write_image(tmp_path_factory.mktemp("img") / "x.jpg", 3, size=(40, 30))
    return decode_image(path.read_bytes(), 32)


def seeds(n: int = 6) -> list[int]:
    return [view_seed(DIGEST, v, 0) for v in range(1, n + 1)]


@pytest.mark.parametrize("op", AUGMENTATIONS)
def test_each_transform_changes_pixels_and_keeps_shape_and_dtype(pixels, op):
    config = parse_augment(op, 1)
    outs = [augment(pixels, config, s) for s in seeds()]
    assert all(o.shape == pixels.shape and o.dtype == np.uint8 for o in outs)
    assert any(not np.array_equal(o, pixels) for o in outs)
    if op == "flip":  # a flip is exact: either the image or its mirror
        assert all(np.array_equal(o, pixels) or np.array_equal(o, pixels[:, ::-1]) for o in outs)
        assert any(np.array_equal(o, pixels) for o in outs)
    else:  # the others draw a continuous parameter: every view differs from the image
        assert all(not np.array_equal(o, pixels) for o in outs)


def test_input_is_not_modified(pixels):
    before = pixels.copy()
    augment(pixels, parse_augment(",".join(AUGMENTATIONS), 1), 7)
    np.testing.assert_array_equal(pixels, before)


def test_same_seed_same_pixels_other_view_other_pixels(pixels):
    config = parse_augment("flip,rotate,zoom,contrast,translate", 2)
    a = augment(pixels, config, view_seed(DIGEST, 1, 0))
    np.testing.assert_array_equal(a, augment(pixels.copy(), config, view_seed(DIGEST, 1, 0)))
    assert not np.array_equal(a, augment(pixels, config, view_seed(DIGEST, 2, 0)))
    assert not np.array_equal(a, augment(pixels, config, view_seed(DIGEST, 1, 1)))
    assert not np.array_equal(a, augment(pixels, config, view_seed("cd" * 32, 1, 0)))


def test_uncovered_pixels_are_reflected_not_black():
    """A uniform image stays uniform under every transform: borders are filled from the image."""
    grey = np.full((24, 24, 3), 180, np.uint8)
    config = parse_augment("rotate,zoom,translate", 1)
    for s in seeds(10):
        assert (augment(grey, config, s) == 180).all()
    # an image whose left half is white: a shift right mirrors white in, never black
    half = np.zeros((20, 20, 3), np.uint8)
    half[:, :10] = 255
    out = augment(half, AugmentConfig(("translate",), 1), 1)
    assert out.min() == 0 and out.max() == 255 and (out[:, 0] == 255).all()


def test_non_square_and_tiny_images():
    rng = np.random.default_rng(0)
    config = parse_augment(",".join(AUGMENTATIONS), 1)
    for shape in [(7, 13, 3), (1, 1, 3), (2, 5, 3)]:
        px = rng.integers(0, 256, shape, dtype=np.uint8)
        assert augment(px, config, 3).shape == shape


def test_bad_pixels_are_refused():
    with pytest.raises(DatasetError, match=r"\(H, W, 3\) uint8"):
        augment(np.zeros((4, 4, 3), np.float32), parse_augment("flip", 1), 0)


def test_parser_orders_dedupes_and_round_trips():
    config = parse_augment(" Zoom, flip ,zoom", 3, seed=5)
    assert config == AugmentConfig(("flip", "zoom"), 3, 5)
    assert AugmentConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert parse_augment(None) is None and parse_augment("", 0) is None


@pytest.mark.parametrize(
    "augment_opt,copies,param,message",
    [
        ("flip,blur", 2, "augment", "unknown augmentation 'blur' in 'flip,blur'; choose from flip, rotate"),
        ("flip", 0, "copies", "must be at least 1 with transforms"),
        ("flip", -1, "copies", "must be between 1 and 32767, not -1"),
        ("flip", 40000, "copies", "must be between 1 and 32767"),
        (None, 3, "copies", "3 augmented views need transforms"),
        (" , ", 3, "augment", "names no transform"),
    ],
)
def test_parser_errors(augment_opt, copies, param, message):
    with pytest.raises(InvalidOptionError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        parse_augment(augment_opt, copies)
    assert err.value.param == param
    with pytest.raises(InvalidOptionError):
        AugmentOptions(augment_opt, copies).check()


def test_options_object_gives_the_config():
    assert AugmentOptions().config() is None
    opts = AugmentOptions("zoom,flip", 3, augment_seed=5).check()
    assert opts.config() == AugmentConfig(("flip", "zoom"), 3, 5)
    assert AugmentOptions.from_dict(opts.to_dict()) == opts


def test_cache_keys():
    config = parse_augment("flip,rotate", 3)
    assert view_key(DIGEST, 0, config) == DIGEST and view_key(DIGEST, 0, None) == DIGEST
    k1 = view_key(DIGEST, 1, config)
    assert len(k1) == 64 and k1 != DIGEST and k1 != view_key(DIGEST, 2, config)
    # copies do not change a view's key (more copies reuse the first ones); ops and seed do
    assert k1 == view_key(DIGEST, 1, parse_augment("rotate,flip", 5))
    assert k1 != view_key(DIGEST, 1, parse_augment("flip", 3))
    assert k1 != view_key(DIGEST, 1, parse_augment("flip,rotate", 3, seed=1))
    assert row_keys([DIGEST, DIGEST], np.array([0, 1]), config) == [DIGEST, k1]
    with pytest.raises(StoreError):
        view_key(DIGEST, 1, None)
