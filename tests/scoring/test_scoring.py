"""`featstore score` as a library call: inputs, the table, the cache, fine-tune runs, the run log."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import copy_store, make_class_folders, via_store, write_image

from featstore.errors import DatasetError
from featstore.scoring.deploy import export_head
from featstore.scoring.jobs import list_inputs
from featstore.scoring.tables import read_predictions, top_classes
from featstore.store.layout import resolve_store
from featstore.store.runlog import read_runs
from featstore.store.shards import open_feature_set

score = via_store("score")


def run(inp, out, store, **kw):
    kw.setdefault("head", "logi")
    return score(str(inp), str(out), store=str(store), emissions=False, **kw)


# ---------------------------------------------------------------- inputs


def test_folder_input_lists_every_image_below_it_sorted(tmp_path):
    root = make_class_folders(tmp_path / "in", classes=("b", "a"), n_per_class=2)
    write_image(root / "top.png", 1)
    write_image(root / "a" / "deep" / "x.jpg", 2)
    (root / "notes.txt").write_text("not an image")
    items, skipped = list_inputs(str(root))
    rels = [it.rel for it in items]
    base = str(root)
    assert rels == [
        f"{base}/{p}" for p in ("a/a0.jpg", "a/a1.jpg", "a/deep/x.jpg", "b/b0.jpg", "b/b1.jpg", "top.png")
    ]
    assert skipped == [] and all(it.label == -1 for it in items)


def test_lists_keep_their_order_and_a_missing_file_is_a_row(tmp_path):
    root = make_class_folders(tmp_path / "in", classes=("c",), n_per_class=3)
    (tmp_path / "l.txt").write_text("# new photos\nin/c/c2.jpg\nin/c/c0.jpg\n\nin/gone.jpg\nin/c/c2.jpg\n")
    items, skipped = list_inputs(str(tmp_path / "l.txt"))
    assert [it.rel for it in items] == ["in/c/c2.jpg", "in/c/c0.jpg", "in/gone.jpg"]
    assert [(s.path, s.reason) for s in skipped] == [("in/c/c2.jpg", "entry 4: duplicate of entry 1")]
    (tmp_path / "l.csv").write_text("\ufeffid,Path\n1,in/c/c1.jpg\n2,%s\n" % (root / "c" / "c0.jpg"))
    items, _ = list_inputs(str(tmp_path / "l.csv"))
    assert [it.path for it in items] == [root / "c" / "c1.jpg", root / "c" / "c0.jpg"]
    items, _ = list_inputs(f"{root}/**/*1.jpg")
    assert [it.rel for it in items] == [f"{root}/c/c1.jpg"]
    items, _ = list_inputs(str(root / "c" / "c1.jpg"))
    assert len(items) == 1


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda p: p / "nowhere", "does not exist"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "no images found in"),
        (lambda p: (p / "e.txt").write_text("# nothing\n") and p / "e.txt", "the list is empty"),
        (
            lambda p: (p / "h.csv").write_text("file,label\na.jpg,x\n") and p / "h.csv",
            "header row naming a `path`",
        ),
        (lambda p: p / "*.nope", "no file matches the pattern"),
    ],
    ids=["missing", "empty-folder", "empty-list", "csv-header", "glob"],
)
def test_bad_inputs_are_refused(tmp_path, make, message):
    with pytest.raises(DatasetError, match=message):
        list_inputs(str(make(tmp_path)))


# ---------------------------------------------------------------- the table and the cache


def test_formats_hold_the_same_rows_and_bad_files_are_rows(tmp_path, scoring_store):
    store, _ = scoring_store
    new = make_class_folders(tmp_path / "new", classes=("x",), n_per_class=4, seed=5)
    (new / "x" / "broken.jpg").write_bytes(b"\xff\xd8\xff truncated")
    tables = []
    for ext in ("parquet", "csv", "jsonl"):
        r = run(new, tmp_path / f"p.{ext}", store, top_k=2)
        assert (r.n_images, r.n_scored, r.n_errors, r.format, r.top_k) == (5, 4, 1, ext, 2)
        tables.append(read_predictions(tmp_path / f"p.{ext}"))
    assert tables[0] == tables[1] == tables[2]
    rows = tables[0]
    assert [r["path"] for r in rows] == [
        f"{new}/x/{n}" for n in ("broken.jpg", "x0.jpg", "x1.jpg", "x2.jpg", "x3.jpg")
    ]
    bad = rows[0]
    assert bad["prediction"] is None and bad["top_k"] is None and bad["error"].startswith("not an image")
    assert len(bad["digest"]) == 64
    for r in rows[1:]:
        assert r["error"] is None and len(r["top_k"]) == 2
        assert r["prediction"] == r["top_k"][0]["class"] and r["probability"] == r["top_k"][0]["probability"]
        assert r["top_k"][0]["probability"] >= r["top_k"][1]["probability"]
    import pyarrow.parquet as pq

    schema = pq.read_schema(tmp_path / "p.parquet")
    assert schema.names == ["path", "prediction", "probability", "top_k", "digest", "error"]
    assert json.loads(schema.metadata[b"classes"]) == ["cat", "dog", "eel"]
    header = (tmp_path / "p.csv").read_text().splitlines()[0]
    assert (
        header
        == "path,prediction,probability,top1_class,top1_probability,top2_class,top2_probability,digest,error"
    )


def test_cached_features_are_reused_and_equal_to_computed_ones(tmp_path, scoring_store):
    store, photos = scoring_store
    cached = run(photos, tmp_path / "a.jsonl", store, top_k=5)
    assert (cached.n_cached, cached.n_computed, cached.device) == (45, 0, None)
    assert cached.top_k == 3  # at most every class
    fresh = run(photos, tmp_path / "b.jsonl", store, top_k=5, force=True)
    assert (fresh.n_cached, fresh.n_computed, fresh.device) == (0, 45, "cpu")
    assert read_predictions(tmp_path / "a.jsonl") == read_predictions(tmp_path / "b.jsonl")
    # the probabilities are the head's on the stored features
    from featstore.store.head_files import load_head

    head, _ = load_head(resolve_store(store), "logi")
    with open_feature_set(resolve_store(store), "photos@tiny") as f:
        want = head.predict_proba(f.read_features().astype(np.float64))
    got = [r["top_k"] for r in read_predictions(tmp_path / "a.jsonl")]
    got = np.array(
        [[{t["class"]: t["probability"] for t in row}[c] for c in ("cat", "dog", "eel")] for row in got]
    )
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert not (resolve_store(store).root / "scores").exists() or not any(
        (resolve_store(store).root / "scores").iterdir()
    )


def test_top_classes_breaks_ties_by_class_order():
    idx, p = top_classes(np.array([[0.2, 0.4, 0.4], [1.0, 0.0, 0.0]]), 2)
    assert idx.tolist() == [[1, 2], [0, 1]] and p.tolist() == [[0.4, 0.4], [1.0, 0.0]]


def test_none_readable_is_an_error_and_writes_nothing(tmp_path, scoring_store):
    store, _ = scoring_store
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jpg").write_bytes(b"")
    with pytest.raises(DatasetError, match="none of the 1 images could be read .*empty file"):
        run(tmp_path / "in", tmp_path / "p.csv", store)
    assert not (tmp_path / "p.csv").exists() and list(tmp_path.glob(".p.csv.*")) == []


def test_the_run_log_gets_a_line(tmp_path, scoring_store):
    store = copy_store(scoring_store[0], tmp_path / "store")
    new = make_class_folders(tmp_path / "new", classes=("x",), n_per_class=3, seed=4)
    r = score(str(new), str(tmp_path / "p.csv"), head="logi", store=str(store), emissions=True)
    runs, bad = read_runs(resolve_store(store))
    last = runs[-1]
    assert bad == 0 and last["command"] == "score" and last["id"] == r.run_id
    assert last["counts"]["n_computed"] == 3 and last["model"] == "logi" and last["engine"] == "local"
    assert "energy_kwh" in last and "co2_kg" in last and last["seconds"] > 0


def test_finetune_model_is_scored_from_its_run_folder(tmp_path, scoring_store):
    """A run folder as `featstore finetune` leaves it: here its classifier.onnx is an export."""
    from featstore.files import sha256_file

    store = copy_store(scoring_store[0], tmp_path / "store")
    photos = scoring_store[1]
    folder = store / "finetune" / "finetune-photos-tiny-1"
    folder.mkdir(parents=True)
    export_head("logi", folder / "classifier.onnx", store=str(store))
    meta = {
        "run_id": folder.name,
        "status": "done",
        "classes": ["cat", "dog", "eel"],
        "input_size": 16,
        "resize": "squash",
        "files_sha256": {"classifier.onnx": sha256_file(folder / "classifier.onnx")},
    }
    (folder / "meta.json").write_text(json.dumps(meta))
    r = run(photos, tmp_path / "ft.jsonl", store, head=None, model=f"finetune:{folder.name}")
    assert (r.model, r.kind, r.n_computed) == (f"finetune:{folder.name}", "finetune", 45)
    run(photos, tmp_path / "head.jsonl", store)
    for a, b in zip(
        read_predictions(tmp_path / "ft.jsonl"), read_predictions(tmp_path / "head.jsonl"), strict=True
    ):
        assert a["path"] == b["path"] and a["prediction"] == b["prediction"]
        assert abs(a["probability"] - b["probability"]) < 1e-4
    from featstore.scoring.arrays import predict

    ft, head = (predict(m, photos, store=store) for m in (f"finetune:{folder.name}", "logi"))
    assert ft.class_names == head.class_names and np.abs(ft.proba - head.proba).max() < 1e-4
    (folder / "classifier.onnx").write_bytes(b"changed")
    from featstore.errors import StoreError

    with pytest.raises(StoreError, match="changed since the run wrote it"):
        run(photos, tmp_path / "x.jsonl", store, head=None, model=f"finetune:{folder.name}")


def test_scoring_with_a_classical_head_never_imports_tensorflow(tmp_path, scoring_store):
    store, photos = scoring_store
    code = (
        "import sys\n"
        "from featstore import Store\n"
        f"r = Store({str(store)!r}).score({str(photos)!r}, {str(tmp_path / 'p.parquet')!r}, head='logi',"
        " force=True, emissions=False)\n"
        "assert r.n_computed == 45, r\n"
        "print([m for m in ('tensorflow', 'keras', 'tf2onnx', 'ray') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_head_whose_backbone_is_gone_is_refused(tmp_path, scoring_store):
    from featstore.errors import StoreError

    store = copy_store(scoring_store[0], tmp_path / "store")
    for f in (store / "backbones").glob("*.onnx"):
        f.unlink()
    with pytest.raises(
        StoreError,
        match=r"head logi needs backbone tiny \(digest [0-9a-f]{12}\), but its ONNX file is missing",
    ):
        run(scoring_store[1], tmp_path / "p.csv", store)
    shutil.rmtree(store / "backbones")
    with pytest.raises(StoreError, match="ONNX file is missing"):
        export_head("logi", tmp_path / "m.onnx", store=str(store))


def test_a_second_job_on_the_same_output_is_refused(tmp_path, scoring_store):
    from featstore.errors import StoreLockedError
    from featstore.files import file_lock
    from featstore.scoring.jobs import job_dir
    from featstore.scoring.predictor import load_predictor

    store, photos = scoring_store
    out = (tmp_path / "p.csv").absolute()
    folder = job_dir(resolve_store(store), load_predictor(resolve_store(store), head="logi"), out)
    with (
        file_lock(folder / "job.lock", "the job"),
        pytest.raises(StoreLockedError, match="another featstore score job is writing"),
    ):
        run(photos, out, store)
    assert not out.exists()
    assert run(photos, out, store).n_scored == 45
    assert not folder.exists()


def test_an_output_another_job_holds_is_refused_in_one_line(tmp_path, scoring_store):
    from featstore.errors import OutputExistsError
    from featstore.files import file_lock

    store, photos = scoring_store
    out = tmp_path / "p.csv"
    for overwrite in (False, True):
        with (
            file_lock(tmp_path / ".p.csv.lock", "p.csv"),
            pytest.raises(
                OutputExistsError, match=r"output .*p.csv is being written by another featstore job"
            ),
        ):
            run(photos, out, store, overwrite=overwrite)
    assert not out.exists() and list(tmp_path.glob(".p.csv.*.tmp")) == []


def test_jobs_started_together_on_one_output_write_it_once(tmp_path, scoring_store):
    """Three `featstore score` processes on one output: one table, two one-line errors."""
    store = copy_store(scoring_store[0], tmp_path / "store")
    out = tmp_path / "same.jsonl"
    cmd = [sys.executable, "-m", "featstore_cli", "score", "--head", "logi", "--input", str(scoring_store[1])]
    cmd += [
        "--output",
        str(out),
        "--store",
        str(store),
        "--no-emissions",
        "-q",
        "--force",
        "--batch-size",
        "4",
    ]
    n_runs = len(read_runs(resolve_store(store))[0])
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)
    ]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert sorted(rc for rc, _ in results) == [0, 1, 1], results
    for rc, err in results:
        if rc:
            assert err.startswith(f"Error: output {out} ") and len(err.splitlines()) == 1, err
    assert len(read_predictions(out)) == 45
    assert sorted(p.name for p in tmp_path.iterdir()) == ["same.jsonl", "store"]
    assert [r["command"] for r in read_runs(resolve_store(store))[0][n_runs:]] == ["score"]


def test_options_come_as_objects_and_bad_ones_are_named(tmp_path, scoring_store):
    from featstore.errors import InvalidOptionError
    from featstore.inference.options import InferenceOptions
    from featstore.options import JobOptions
    from featstore.scoring.jobs import score as score_objects
    from featstore.scoring.options import ScoreOptions

    store, photos = scoring_store
    job = JobOptions(store=str(store), emissions=False)
    options = ScoreOptions(str(photos), str(tmp_path / "p.csv"), head="logi", top_k=2)
    r = score_objects(options, inference=InferenceOptions(batch_size=5), job=job)
    assert (r.n_scored, r.top_k, r.n_cached) == (45, 2, 45)
    bad = [
        ({"batch": 1}, "batch: unknown option; valid ones: batch_size, decoder, device, engine, "),
        ({"top_k": 0}, "top_k: must be a whole number of at least 1, not 0"),
        ({"head": None}, r"head: give exactly one: head \(a head id\) or model \(finetune:<run-id>\)"),
        ({"engine": "spark"}, "engine: must be one of local, ray, not 'spark'"),
        ({"n_workers": 0}, "n_workers: must be at least 1, not 0"),
    ]
    for kw, message in bad:
        with pytest.raises(InvalidOptionError, match=message):
            score(str(photos), str(tmp_path / "q.csv"), **{"head": "logi", "job": job, **kw})
    assert not (tmp_path / "q.csv").exists()
