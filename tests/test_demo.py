"""The demo's pieces: the digits folder and the choice of weights."""

from __future__ import annotations

import numpy as np
from PIL import Image

from featstore.backbones.applications import get_backbone, imagenet_weights_path
from featstore.backbones.fetching import import_weights
from featstore.data.scan import scan_dataset
from featstore.demo import choose_weights, write_digits


def test_digits_folder(tmp_path):
    folder = tmp_path / "digits"
    assert write_digits(folder) == 1797
    ds = scan_dataset(folder)
    assert ds.class_names == [str(d) for d in range(10)] and len(ds.items) == 1797
    img = np.asarray(Image.open(folder / "0" / "digit-0000.png"))
    assert img.shape == (32, 32) and img.max() > 200 and img.min() == 0
    mtime = (folder / "0" / "digit-0000.png").stat().st_mtime_ns
    assert write_digits(folder) == 1797  # kept as it was
    assert (folder / "0" / "digit-0000.png").stat().st_mtime_ns == mtime


def test_weights_auto_says_why(keras_home, tmp_path):
    chosen, reason = choose_weights("auto")  # the tests run with FEATSTORE_OFFLINE=1
    assert chosen == "none"
    assert reason.startswith("random init (--weights none), because ImageNet weights are not usable: ")
    assert "FEATSTORE_OFFLINE=1 forbids downloading" in reason
    path = imagenet_weights_path(get_backbone("mobilenet_v2"))
    path.write_bytes(b"x")
    chosen, reason = choose_weights("auto")
    assert chosen == "none" and "is not the official mobilenet_v2 weight file" in reason
    import_weights(path, "mobilenet_v2", trust=True)
    chosen, reason = choose_weights("auto")
    assert chosen == "imagenet" and reason.startswith("ImageNet weights (trusted: ")
    assert choose_weights("none") == ("none", "--weights none asked for")
