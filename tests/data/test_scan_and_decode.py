"""Dataset scanning, decoding of every image kind, and the prefetch pipeline."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import make_class_folders, write_image
from PIL import Image

from featstore.data.decode import ImageDecodeError, decode_image, load_images, resolve_decoder
from featstore.data.options import DECODERS
from featstore.data.scan import check_name, scan_dataset
from featstore.errors import DatasetError, InvalidOptionError, MissingDependencyError

#: Every decoder installed here; simplejpeg is an optional dependency (extra `fast`).
INSTALLED_DECODERS = ["pillow"] + (["simplejpeg"] if resolve_decoder("auto") == "simplejpeg" else [])


def _png_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kw)
    return buf.getvalue()


def test_class_folders(photos):
    ds = scan_dataset(photos)
    assert ds.name == "photos" and ds.layout == "folders"
    assert ds.class_names == ["cat", "dog"]
    assert [it.rel for it in ds.items][:2] == ["cat/cat0.jpg", "cat/cat1.jpg"]
    assert {it.label for it in ds.items} == {0, 1}
    assert not ds.has_split


def test_nested_files_belong_to_their_class(tmp_path):
    write_image(tmp_path / "d" / "cat" / "sub" / "a.png", 1)
    ds = scan_dataset(tmp_path / "d")
    assert [(it.rel, it.label) for it in ds.items] == [("cat/sub/a.png", 0)]


def test_split_folders_are_recorded(tmp_path):
    root = tmp_path / "ds"
    make_class_folders(root / "train", n_per_class=2)
    make_class_folders(root / "validation", n_per_class=1, seed=1)
    make_class_folders(root / "test", classes=("cat", "dog", "eel"), n_per_class=1, seed=2)
    ds = scan_dataset(root)
    assert ds.layout == "splits" and ds.has_split
    assert ds.class_names == ["cat", "dog", "eel"]
    splits = {it.split for it in ds.items}
    assert splits == {"train", "val", "test"}
    eel = [it for it in ds.items if it.rel.startswith("test/eel")]
    assert eel[0].label == 2


@pytest.mark.parametrize(
    "names",
    [("Training", "DEV", "Testing"), ("train", "Valid", "TEST"), ("TRAIN", "val", "testing")],
)
def test_split_folder_names_are_matched_case_insensitively(tmp_path, names):
    root = tmp_path / "ds"
    for i, name in enumerate(names):
        make_class_folders(root / name, n_per_class=1, seed=i)
    make_class_folders(root / "extra", n_per_class=1, seed=9)
    ds = scan_dataset(root)
    assert ds.layout == "splits" and ds.class_names == ["cat", "dog"]
    assert {it.rel.split("/")[0]: it.split for it in ds.items} == dict(
        zip(names, ("train", "val", "test"), strict=True)
    )
    assert [s.path for s in ds.skipped] == ["extra"]


def test_manifest_split_values_are_matched_case_insensitively(tmp_path, photos):
    csv = tmp_path / "m.csv"
    rows = [("cat0", "Training"), ("cat1", "DEV"), ("cat2", "Testing"), ("dog0", "Validation"), ("dog1", "x")]
    csv.write_text("path,label,split\n" + "".join(f"photos/{n[:3]}/{n}.jpg,{n[:3]},{s}\n" for n, s in rows))
    ds = scan_dataset(csv)
    assert [(it.rel, it.split) for it in ds.items] == [
        ("photos/cat/cat0.jpg", "train"),
        ("photos/cat/cat1.jpg", "val"),
        ("photos/cat/cat2.jpg", "test"),
        ("photos/dog/dog0.jpg", "val"),
    ]
    assert [s.reason for s in ds.skipped] == [
        "line 6: unknown split 'x' (use train, training, val, valid, validation, dev, test, testing)"
    ]


def test_flat_folder_is_unlabelled(tmp_path):
    for i in range(3):
        write_image(tmp_path / "flat" / f"{i}.png", i)
    ds = scan_dataset(tmp_path / "flat")
    assert ds.layout == "flat" and ds.class_names == []
    assert all(it.label == -1 for it in ds.items)


def test_top_level_images_beside_class_folders_are_skipped(photos):
    write_image(photos / "stray.jpg", 9)
    ds = scan_dataset(photos)
    assert [s.path for s in ds.skipped] == ["stray.jpg"]
    assert "not inside a class folder" in ds.skipped[0].reason


def test_empty_class_folder_is_reported(photos):
    (photos / "empty").mkdir()
    ds = scan_dataset(photos)
    assert ds.empty_classes == ["empty"]
    assert "empty" in ds.class_names


def test_non_images_and_hidden_files_are_ignored(photos):
    (photos / "cat" / "notes.txt").write_text("hello")
    (photos / "cat" / ".DS_Store").write_bytes(b"\0\0")
    assert len(scan_dataset(photos).items) == 8


def test_missing_folder_and_empty_folder(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        scan_dataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no images found"):
        scan_dataset(tmp_path / "empty")


def test_symlink_loop_terminates(photos):
    os.symlink(photos / "cat", photos / "cat" / "loop")
    ds = scan_dataset(photos)
    assert len(ds.items) == 8
    assert any("symlink loop" in s.reason for s in ds.skipped)


def test_bad_dataset_names_are_refused(photos):
    for bad in ("../x", "a/b", "x@y", ""):
        with pytest.raises(DatasetError):
            check_name(bad)
    assert scan_dataset(photos, name="my.set-1").name == "my.set-1"


def test_manifest(tmp_path, photos):
    csv = tmp_path / "m.csv"
    csv.write_text(
        "\ufeffpath,label,split,extra\n"
        f"{photos}/cat/cat0.jpg,cat,train,x\n"
        "photos/dog/dog0.jpg,dog,test,y\n"
        "photos/dog/dog0.jpg,dog,test,dup\n"
        "photos/missing.jpg,dog,train,z\n"
        "photos/cat/cat1.jpg,cat,holdout,z\n",
        encoding="utf-8",
    )
    ds = scan_dataset(csv)
    assert ds.name == "m" and ds.layout == "manifest"
    assert ds.class_names == ["cat", "dog"]
    assert len(ds.items) == 2
    assert {it.split for it in ds.items} == {"train", "test"}
    reasons = sorted(s.reason for s in ds.skipped)
    assert any("duplicate of line 3" in r for r in reasons)
    assert any("file not found" in r for r in reasons)
    assert any("unknown split 'holdout'" in r for r in reasons)


def test_manifest_with_wrong_header(tmp_path):
    csv = tmp_path / "m.csv"
    csv.write_text("file,class\na.jpg,cat\n")
    with pytest.raises(DatasetError, match="must start with a header naming columns path,label"):
        scan_dataset(csv)
    csv.write_text("")
    with pytest.raises(DatasetError, match="is empty"):
        scan_dataset(csv)


def test_path_list(tmp_path, photos):
    lst = tmp_path / "new.txt"
    lst.write_text("# new photos\nphotos/cat/cat0.jpg\n\nphotos/nope.jpg\n")
    ds = scan_dataset(lst)
    assert [it.label for it in ds.items] == [-1]
    assert ds.skipped[0].reason == "line 4: file not found"


def test_other_file_types_are_refused(tmp_path):
    f = tmp_path / "data.json"
    f.write_text("{}")
    with pytest.raises(DatasetError, match="not a .csv manifest"):
        scan_dataset(f)


@pytest.mark.parametrize("decoder", INSTALLED_DECODERS)
@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "RGBA", "LA", "1", "I"])
def test_every_mode_becomes_rgb(mode, decoder):
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8))
    buf = io.BytesIO()
    fmt = "JPEG" if mode == "CMYK" else ("TIFF" if mode == "I" else "PNG")
    img.convert(mode).save(buf, format=fmt)
    out = decode_image(buf.getvalue(), 16, decoder=decoder)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8


def test_sixteen_bit_png_is_scaled_not_clipped():
    arr = np.full((8, 8), 40000, dtype=np.uint16)
    data = _png_bytes(Image.fromarray(arr))
    out = decode_image(data, 8)
    assert abs(int(out[0, 0, 0]) - round(40000 / 257)) <= 1


def test_alpha_is_composited_over_white():
    img = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    out = decode_image(_png_bytes(img), 4)
    assert (out == 255).all()


@pytest.mark.parametrize("decoder", INSTALLED_DECODERS)
def test_exif_orientation_is_applied(decoder):
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 20, 20))  # left half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif, quality=95)
    out = decode_image(buf.getvalue(), 20, resize="pad", decoder=decoder)
    # after rotation the image is 20 wide, 40 high: blue on top, red below
    assert out[2, 10, 2] > 200 and out[17, 10, 0] > 200


def test_animated_gif_gives_first_frame():
    frames = [Image.new("P", (8, 8), i) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    assert decode_image(buf.getvalue(), 8).shape == (8, 8, 3)


def test_one_pixel_image():
    assert decode_image(_png_bytes(Image.new("RGB", (1, 1), (1, 2, 3))), 8)[4, 4].tolist() == [1, 2, 3]


@pytest.mark.parametrize(
    "policy,expect_border",
    [("squash", False), ("crop", False), ("pad", True)],
)
def test_resize_policies(policy, expect_border):
    img = Image.new("RGB", (40, 20), (200, 200, 200))
    out = decode_image(_png_bytes(img), 20, resize=policy)
    assert out.shape == (20, 20, 3)
    assert (out[0, 0].tolist() == [0, 0, 0]) == expect_border


@pytest.mark.parametrize("decoder", INSTALLED_DECODERS)
def test_large_jpeg_uses_draft_and_keeps_content(decoder):
    img = Image.new("RGB", (2000, 1600), (10, 200, 30))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    out = decode_image(buf.getvalue(), 32, decoder=decoder)
    assert np.abs(out.astype(int) - [10, 200, 30]).max() < 8


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"", "empty file"),
        (b"this is text, not a JPEG", "not an image"),
    ],
)
@pytest.mark.parametrize("decoder", INSTALLED_DECODERS)
def test_undecodable_bytes(data, reason, decoder):
    with pytest.raises(ImageDecodeError, match=reason):
        decode_image(data, 16, decoder=decoder)


@pytest.mark.parametrize("decoder", INSTALLED_DECODERS)
def test_truncated_jpeg(decoder):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    with pytest.raises(ImageDecodeError, match="corrupt or truncated"):
        decode_image(buf.getvalue()[: len(buf.getvalue()) // 2], 16, decoder=decoder)


@pytest.mark.parametrize("decoder", INSTALLED_DECODERS)
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_decompression_bomb(monkeypatch, fmt, decoder):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    buf = io.BytesIO()
    Image.new("RGB", (40, 40)).save(buf, format=fmt)
    with pytest.raises(ImageDecodeError, match="decompression bomb"):
        decode_image(buf.getvalue(), 16, decoder=decoder)


def _photo_jpeg(w: int, h: int, seed: int, **save) -> bytes:
    """A smooth photo-like JPEG (noise on a blurred random field) of w x h pixels."""
    rng = np.random.default_rng(seed)
    low = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
    arr = np.clip(np.asarray(low, np.int16) + rng.integers(-12, 13, (h, w, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", **save)
    return buf.getvalue()


@pytest.mark.skipif("simplejpeg" not in INSTALLED_DECODERS, reason="simplejpeg is not installed")
@pytest.mark.parametrize("resize", ["squash", "crop", "pad"])
@pytest.mark.parametrize(
    "w,h,save",
    [
        (33, 21, {}),  # smaller than the input: no DCT scaling
        (20, 12, {}),  # smaller than the input on both sides
        (250, 311, {"quality": 85}),  # like most flower photos: scale 1
        (500, 470, {"subsampling": 0}),  # 4:4:4, scale 2
        (1030, 999, {"progressive": True}),  # progressive, scale 4
        (2100, 1700, {"quality": 70}),  # scale 8
    ],
)
def test_simplejpeg_gives_the_pillow_pixels(w, h, save, resize):
    data = _photo_jpeg(w, h, w, **save)
    size = 224 if w > 200 else 16
    want = decode_image(data, size, resize, decoder="pillow")
    got = decode_image(data, size, resize, decoder="simplejpeg")
    np.testing.assert_array_equal(got, want)


def test_decoder_names():
    assert resolve_decoder("pillow") == "pillow"
    assert resolve_decoder("auto") in DECODERS
    with pytest.raises(InvalidOptionError, match="decoder: must be one of auto, pillow, simplejpeg"):
        resolve_decoder("turbo")


def test_simplejpeg_missing_is_a_clear_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "simplejpeg", None)  # what an absent package looks like
    assert resolve_decoder("auto") == "pillow"
    with pytest.raises(MissingDependencyError, match=r"featstore\[fast\].*--decoder pillow"):
        resolve_decoder("simplejpeg")


def test_load_images_keeps_order_hashes_and_skips_known(photos):
    (photos / "cat" / "broken.jpg").write_bytes(b"garbage")
    ds = scan_dataset(photos)
    first = ds.items[1]
    known = {hashlib.sha256(Path(first.path).read_bytes()).hexdigest()}
    out = list(load_images(ds.items, size_px=16, n_workers=3, known_digests=known, max_ahead=2))
    assert [o.item.rel for o in out] == [it.rel for it in ds.items]
    assert all(o.read_s > 0 for o in out) and all(o.decode_s > 0 for o in out[2:])
    assert out[0].item.rel == "cat/broken.jpg" and out[0].error and out[0].pixels is None
    assert out[1].digest in known and out[1].pixels is None and out[1].error is None
    assert all(o.pixels.shape == (16, 16, 3) for o in out[2:])


def test_unreadable_file_is_reported(photos):
    if os.geteuid() == 0:
        pytest.skip("root reads files whatever their permissions")
    victim = photos / "cat" / "cat0.jpg"
    victim.chmod(0)
    out = list(load_images(scan_dataset(photos).items, size_px=16))
    assert out[0].error.startswith("cannot read file")
