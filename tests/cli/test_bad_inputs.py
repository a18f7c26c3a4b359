"""One folder holding every kind of awkward input, extracted through the CLI: each file is either
converted as documented or skipped with its reason, and the run goes on."""

from __future__ import annotations

import io
import json
import os

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from featstore_cli.app import app

runner = CliRunner()


def _save(path, img, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)


def make_zoo(root):
    """Return {relative path: expected outcome} for a folder of awkward files under `root`."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8))
    c = root / "things"
    expect = {}

    def ok(rel, img, **kw):
        _save(root / rel, img, **kw)
        expect[rel] = "ok"

    ok("things/plain.jpg", rgb)
    ok("things/alpha.png", rgb.convert("RGBA"))
    ok("things/gray16.png", Image.fromarray((rng.integers(0, 65535, (20, 20))).astype(np.uint16)))
    ok("things/gray.png", rgb.convert("L"))
    ok("things/cmyk.jpg", rgb.convert("CMYK"))
    ok("things/palette.gif", rgb.convert("P"))
    frames = [rgb.convert("P"), rgb.rotate(90).convert("P")]
    frames[0].save(c / "animated.gif", save_all=True, append_images=frames[1:])
    expect["things/animated.gif"] = "ok"
    ok("things/one_pixel.png", Image.new("RGB", (1, 1), (9, 9, 9)))
    exif = Image.Exif()
    exif[0x0112] = 6
    ok("things/rotated.jpg", rgb, exif=exif)
    ok("things/été photo 日本.webp", rgb)
    ok("things/tiff.tif", rgb)
    ok("things/bitmap.bmp", rgb)
    raw = os.fsencode(str(c)) + b"/caf\xe9.png"  # a file name that is not UTF-8
    with open(raw, "wb") as f:
        buf = io.BytesIO()
        rgb.save(buf, format="PNG")
        f.write(buf.getvalue())
    expect[os.fsdecode(b"things/caf\xe9.png")] = "ok"
    (c / "zero.jpg").write_bytes(b"")
    expect["things/zero.jpg"] = "empty file (0 bytes)"
    (c / "text.jpg").write_text("this is text")
    expect["things/text.jpg"] = "not an image Pillow can read"
    buf = io.BytesIO()
    rgb.save(buf, format="JPEG")
    (c / "truncated.jpg").write_bytes(buf.getvalue()[:200])
    expect["things/truncated.jpg"] = "corrupt or truncated image"
    os.symlink(c, c / "loop")
    (root / "empty_class").mkdir()
    return expect


def _extract_json(backbone, data, store):
    args = [
        "extract",
        "-b",
        str(backbone),
        "-d",
        str(data),
        "--store",
        str(store),
        "--no-emissions",
        "--json",
    ]
    return runner.invoke(app, args)


def test_every_awkward_input_is_converted_or_skipped_with_its_reason(tmp_path, tiny_onnx):
    data = tmp_path / "zoo"
    expect = make_zoo(data)
    out = _extract_json(tiny_onnx, data, tmp_path / "s")
    assert out.exit_code == 0, out.output
    r = json.loads(out.stdout)
    skipped = {s["path"]: s["reason"] for s in r["skipped"]}
    for rel, outcome in expect.items():
        if outcome == "ok":
            assert rel not in skipped, (rel, skipped.get(rel))
        else:
            assert skipped[rel].startswith(outcome), (rel, skipped[rel])
    assert any("symlink loop" in reason for reason in skipped.values())
    assert r["n_images"] == sum(v == "ok" for v in expect.values())
    assert r["empty_classes"] == ["empty_class"]
    again = json.loads(_extract_json(tiny_onnx, data, tmp_path / "s").stdout)
    assert again["n_computed"] == 0 and again["n_reused"] == r["n_images"]
    verify = runner.invoke(app, ["store", "verify", "--store", str(tmp_path / "s")])
    assert verify.exit_code == 0, verify.stdout


def test_one_class_dataset_extracts(tmp_path, tiny_onnx):
    _save(tmp_path / "one" / "only" / "a.png", Image.new("RGB", (8, 8)))
    out = runner.invoke(
        app,
        [
            "extract",
            "-b",
            str(tiny_onnx),
            "-d",
            str(tmp_path / "one"),
            "--store",
            str(tmp_path / "s"),
            "--no-emissions",
            "-q",
        ],
    )
    assert out.exit_code == 0 and "1 images, 8 features (float32), 1 classes" in out.stdout


def test_manifest_faults_through_the_cli(tmp_path, tiny_onnx):
    _save(tmp_path / "img" / "a.png", Image.new("RGB", (8, 8), (1, 2, 3)))
    _save(tmp_path / "img" / "b.png", Image.new("RGB", (8, 8), (4, 5, 6)))
    good = tmp_path / "m.csv"
    good.write_text("\ufeffpath,label,extra\nimg/a.png,x,1\nimg/a.png,x,2\nimg/gone.png,y,3\nimg/b.png,y,4\n")
    out = _extract_json(tiny_onnx, good, tmp_path / "s")
    r = json.loads(out.stdout)
    assert r["n_images"] == 2
    assert sorted(s["reason"] for s in r["skipped"]) == [
        "line 3: duplicate of line 2",
        "line 4: file not found",
    ]
    bad = tmp_path / "bad.csv"
    bad.write_text("file,class\nimg/a.png,x\n")
    out = runner.invoke(
        app, ["extract", "-b", str(tiny_onnx), "-d", str(bad), "--store", str(tmp_path / "s")]
    )
    assert out.exit_code == 1 and out.stderr.startswith("Error: manifest") and "path,label" in out.stderr


def _tree(root):
    return {p for p in root.rglob("*")}


def test_hostile_labels_and_paths_never_write_outside_the_store(tmp_path, tiny_onnx):
    for i in range(12):
        _save(tmp_path / "img" / f"{i}.png", Image.new("RGB", (8, 8), (i * 20, 3, 200 - i * 10)))
    work = tmp_path / "work"
    work.mkdir()
    labels = ["../../../escape", "/tmp/abs-evil", "..\\win"]
    rows = [f"../img/{i}.png,{labels[i % 3]}" for i in range(12)]
    manifest = work / "..hostile.csv"
    manifest.write_text("path,label\n" + "\n".join(rows) + "\n")
    before = _tree(tmp_path)
    store = work / "s"
    out = _extract_json(tiny_onnx, manifest, store)
    assert out.exit_code == 0, out.output
    r = json.loads(out.stdout)
    assert r["n_images"] == 12 and r["class_names"] == sorted(labels)
    name = r["feature_set"]
    fit = runner.invoke(
        app,
        [
            "fit-head",
            "logistic",
            "-f",
            name,
            "--store",
            str(store),
            "--no-emissions",
            "--test-size",
            "0.34",
            "--val-size",
            "0.25",
        ],
    )
    assert fit.exit_code == 0, fit.output
    assert runner.invoke(app, ["report", "--store", str(store)]).exit_code == 0
    new = _tree(tmp_path) - before
    assert new and all(p == store or store in p.parents for p in new), sorted(
        p for p in new if store not in p.parents
    )
    assert not os.path.exists("/tmp/abs-evil")
