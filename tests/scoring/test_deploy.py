"""`featstore export`: one ONNX file per head, pixels in, probabilities out, equal to `score`."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from conftest import build_tiny_onnx, copy_store, via_store

from featstore.data.decode import decode_image
from featstore.errors import ExportError, OutputExistsError
from featstore.scoring.deploy import MAX_PROBA_DIFF, export_head, head_model
from featstore.scoring.jobs import list_inputs
from featstore.scoring.tables import read_predictions

extract = via_store("extract")
fit_head = via_store("fit_head")
score = via_store("score")


def make_colour_folders(root, classes=("cat", "dog", "eel"), n_per_class: int = 12, seed: int = 0):
    """JPEGs of a random flat colour plus noise, the colour range depending on the class, so the
    tiny backbone's features differ from image to image (noise images all look alike to it)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for ci, c in enumerate(classes):
        for i in range(n_per_class):
            colour = rng.integers(0, 256, 3)
            colour[ci % 3] = rng.integers(150, 256)
            px = np.clip(colour + rng.normal(0, 20, (20, 24, 3)), 0, 255).astype(np.uint8)
            (root / c).mkdir(parents=True, exist_ok=True)
            Image.fromarray(px).save(root / c / f"{c}{i}.jpg")
    return root


@pytest.fixture(scope="module")
def colour_store(tmp_path_factory, tiny_onnx):
    """A store with colours@tiny: 3 classes of 12 colourful JPEGs. Returns (store, folder)."""
    root = tmp_path_factory.mktemp("colours")
    photos = make_colour_folders(root / "colours")
    extract(str(photos), str(tiny_onnx), store=str(root / "store"), emissions=False)
    return root / "store", photos


def _pixels(folder, size: int, resize: str = "squash") -> tuple[list[str], np.ndarray]:
    items, _ = list_inputs(str(folder))
    return [it.rel for it in items], np.stack(
        [decode_image(it.path.read_bytes(), size, resize) for it in items]
    )


def _score_proba(folder, out, store, classes, **kw) -> np.ndarray:
    score(str(folder), str(out), store=str(store), top_k=len(classes), emissions=False, **kw)
    rows = read_predictions(out)
    return np.array([[{t["class"]: t["probability"] for t in r["top_k"]}[c] for c in classes] for r in rows])


def _run_file(path, pixels) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(["probabilities"], {"pixels": pixels})[0]


@pytest.mark.parametrize(
    "kind,options",
    [
        ("logistic", {}),
        ("svm", {}),
        ("svm", {"kernel": "linear"}),
        ("knn", {"k": 5}),
        ("knn", {"k": 5, "scale": "l2"}),
        ("dense", {"epochs": 3, "hidden": [16]}),
    ],
    ids=["logistic", "svm-rbf", "svm-linear", "knn", "knn-l2", "dense"],
)
def test_export_gives_the_probabilities_of_score(tmp_path, colour_store, kind, options):
    src, photos = colour_store
    store = copy_store(src, tmp_path / "store")
    head = fit_head(kind, ["colours@tiny"], store=str(store), emissions=False, **options)[0].head_id
    result = export_head(head, tmp_path / "model.onnx", store=str(store))
    assert result.max_abs_diff < MAX_PROBA_DIFF
    model = onnx.load(str(tmp_path / "model.onnx"))
    meta = {p.key: p.value for p in model.metadata_props}
    classes = json.loads(meta["classes"])
    assert classes == ["cat", "dog", "eel"] and meta["resize"] == "squash" and meta["input_size"] == "16"
    new = make_colour_folders(tmp_path / "new", classes=("x",), n_per_class=6, seed=9)
    for folder in (photos, new):  # training images and new ones
        paths, pixels = _pixels(folder, 16)
        got = _run_file(tmp_path / "model.onnx", pixels)
        want = _score_proba(folder, tmp_path / f"{folder.name}.jsonl", store, classes, head=head)
        assert got.shape == (len(paths), 3) and got.dtype == np.float32
        np.testing.assert_allclose(got.sum(axis=1), 1, atol=1e-5)
        assert np.abs(got - want).max() < 1e-4


def test_exported_file_runs_without_featstore(tmp_path, scoring_store):
    store, photos = scoring_store
    export_head("logi", tmp_path / "m.onnx", store=str(store))
    _, pixels = _pixels(photos, 16)
    np.save(tmp_path / "px.npy", pixels)
    code = (
        "import sys\n"
        "sys.modules['featstore'] = None  # any import of featstore fails\n"
        "import json, numpy as np, onnxruntime as ort\n"
        f"s = ort.InferenceSession({str(tmp_path / 'm.onnx')!r}, providers=['CPUExecutionProvider'])\n"
        "classes = json.loads(s.get_modelmeta().custom_metadata_map['classes'])\n"
        f"p = s.run(None, {{'pixels': np.load({str(tmp_path / 'px.npy')!r})}})[0]\n"
        "print(json.dumps({'classes': classes, 'proba': p.tolist()}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    want = _score_proba(photos, tmp_path / "s.csv", store, got["classes"], head="logi")
    assert np.abs(np.array(got["proba"]) - want).max() < 1e-4


def test_export_of_a_head_with_an_empty_class_and_joined_backbones(tmp_path):
    photos = make_colour_folders(tmp_path / "photos", classes=("ant", "cow"))
    (photos / "bee").mkdir()  # an empty class: the head's columns skip it
    other = build_tiny_onnx(tmp_path / "other.onnx", n_features=5, seed=3)
    tiny = build_tiny_onnx(tmp_path / "tiny.onnx")
    store = tmp_path / "store"
    for backbone in (tiny, other):
        extract(str(photos), str(backbone), store=str(store), emissions=False)
    head = fit_head("logistic", ["photos@tiny", "photos@other"], store=str(store), emissions=False)[0]
    r = export_head(head.head_id, tmp_path / "m.onnx", store=str(store))
    assert r.backbones == ["tiny", "other"] and r.class_names == ["ant", "bee", "cow"]
    _, pixels = _pixels(photos, 16)
    got = _run_file(tmp_path / "m.onnx", pixels)
    want = _score_proba(photos, tmp_path / "s.parquet", store, r.class_names, head=head.head_id)
    assert np.abs(got - want).max() < 1e-4 and np.all(got[:, 1] == 0)


def test_export_refuses_an_existing_output_and_unconvertible_heads(tmp_path, scoring_store):
    store, _ = scoring_store
    out = tmp_path / "m.onnx"
    out.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError, match="exists already; pass --overwrite"):
        export_head("logi", out, store=str(store))
    assert out.read_bytes() == b"keep me"
    export_head("logi", out, store=str(store), overwrite=True)
    assert onnx.load(str(out)).graph.output[0].name == "probabilities"
    with pytest.raises(ExportError, match="heads of type Head cannot be exported"):
        head_model(type("Head", (), {"classes_": [0, 1]})(), 8, 2)


def test_a_head_on_int8_features_scores_and_exports_with_the_int8_model(tmp_path, tiny_onnx):
    from conftest import make_class_folders

    photos = make_class_folders(tmp_path / "photos", classes=("a", "b", "c"), n_per_class=8)
    store = tmp_path / "store"
    extract(str(photos), str(tiny_onnx), store=str(store), precision="int8", emissions=False)
    fit_head("logistic", ["photos@tiny-int8"], store=str(store), name="q", C=[1.0], emissions=False)
    cached = _score_proba(photos, tmp_path / "c.csv", store, ["a", "b", "c"], head="q")
    fresh = _score_proba(photos, tmp_path / "f.csv", store, ["a", "b", "c"], head="q", force=True)
    np.testing.assert_allclose(fresh, cached, atol=1e-6)  # the int8 model ran, not the fp32 one
    export_head("q", tmp_path / "q.onnx", store=str(store))
    _, pixels = _pixels(photos, 16)
    assert np.abs(_run_file(tmp_path / "q.onnx", pixels) - cached).max() < 1e-4


def test_export_never_replaces_a_file_written_meanwhile(tmp_path, scoring_store, monkeypatch):
    import featstore.scoring.deploy as deploy

    store, _ = scoring_store
    out = tmp_path / "m.onnx"
    checked = deploy.check_output

    def another_export_meanwhile(output, overwrite, suffixes):
        path = checked(output, overwrite, suffixes)
        path.write_bytes(b"another export")
        return path

    monkeypatch.setattr(deploy, "check_output", another_export_meanwhile)
    with pytest.raises(OutputExistsError, match=f"^output {out} exists already; pass --overwrite"):
        export_head("logi", out, store=str(store))
    assert out.read_bytes() == b"another export" and sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


@pytest.mark.parametrize("links", [True, False], ids=["hard-links", "no-hard-links"])
def test_concurrent_writes_of_one_output_give_one_file(tmp_path, monkeypatch, links):
    import errno
    import os
    import threading

    from featstore.scoring.deploy import write_output

    if not links:

        def no_link(src, dst):
            raise OSError(errno.EPERM, "hard links not supported")

        monkeypatch.setattr(os, "link", no_link)
    out = tmp_path / "m.onnx"
    barrier, outcomes = threading.Barrier(3), []

    def write(i: int) -> None:
        barrier.wait()
        try:
            write_output(out, f"writer {i}".encode(), overwrite=False)
            outcomes.append(i)
        except OutputExistsError as err:
            outcomes.append(str(err))

    threads = [threading.Thread(target=write, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    (winner,) = [o for o in outcomes if isinstance(o, int)]
    assert outcomes.count(f"output {out} exists already; pass --overwrite to replace it") == 2
    assert out.read_bytes() == f"writer {winner}".encode()
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".m.onnx.*.tmp"))
    write_output(out, b"replaced", overwrite=True)
    assert out.read_bytes() == b"replaced"


def test_an_ensemble_exports_as_one_file_when_every_member_converts(tmp_path, colour_store):
    from conftest import via_store

    fit_ensemble = via_store("ensemble")

    src, photos = colour_store
    store = copy_store(src, tmp_path / "store")
    for kind, options in (("logistic", {}), ("knn", {"k": 5}), ("dense", {"epochs": 2, "hidden": [8]})):
        fit_head(kind, ["colours@tiny"], store=str(store), emissions=False, name=kind, **options)
    fit_ensemble(["logistic", "knn", "dense"], name="vote", store=str(store))
    result = export_head("vote", tmp_path / "vote.onnx", store=str(store))
    assert result.max_abs_diff < MAX_PROBA_DIFF
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "vote.onnx")).metadata_props}
    assert meta["kind"] == "ensemble" and json.loads(meta["members"]) == ["logistic", "knn", "dense"]
    classes = json.loads(meta["classes"])
    paths, pixels = _pixels(photos, 16)
    got = _run_file(tmp_path / "vote.onnx", pixels)
    want = _score_proba(photos, tmp_path / "s.jsonl", store, classes, head="vote")
    assert got.shape == (len(paths), 3) and np.abs(got - want).max() < 1e-4


def test_an_ensemble_with_a_member_that_cannot_convert_names_it(tmp_path, colour_store):
    from dataclasses import dataclass
    from typing import ClassVar

    from featstore.heads.params import HeadParams, make_scaler
    from featstore.heads.registry import HeadKind, register_head_kind, unregister_head_kind

    fit_ensemble = via_store("ensemble")

    @dataclass(frozen=True)
    class BayesParams(HeadParams):
        kind: ClassVar[str] = "bayes"
        scale: str = "standard"

    def build(params, context):
        from sklearn.naive_bayes import GaussianNB
        from sklearn.pipeline import Pipeline

        return Pipeline([("scale", make_scaler(params.scale)), ("clf", GaussianNB())])

    src, _ = colour_store
    store = copy_store(src, tmp_path / "store")
    register_head_kind(HeadKind(BayesParams, build=build))
    try:
        fit_head("bayes", ["colours@tiny"], store=str(store), emissions=False, name="nb")
        fit_head("logistic", ["colours@tiny"], store=str(store), emissions=False, name="lo")
        fit_ensemble(["lo", "nb"], name="vote", store=str(store))
        with pytest.raises(
            ExportError,
            match=r"^member nb \(bayes\) of the ensemble cannot be exported: bayes heads have no ONNX "
            r"conversion, so they cannot be exported; an ensemble is one ONNX file only when every member converts$",
        ):
            export_head("vote", tmp_path / "vote.onnx", store=str(store))
    finally:
        unregister_head_kind("bayes")
    assert not (tmp_path / "vote.onnx").exists()
