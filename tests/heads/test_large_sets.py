"""Sets too large for memory: refused at once with the way out, a stratified sample by
--max-train-rows, and the kinds that cannot scale refusing above their measured size."""

from __future__ import annotations

import pytest
from conftest import blobs, via_store, write_synthetic_set
from typer.testing import CliRunner

import featstore.heads.training_data as training_data
from featstore.errors import DatasetError, HeadError
from featstore.heads.kinds import knn, svm
from featstore.store.head_files import read_meta
from featstore.store.layout import resolve_store
from featstore_cli.app import app

fit_head = via_store("fit_head")


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    X, y = blobs(n_per_class=40)
    store = tmp_path_factory.mktemp("big") / "store"
    write_synthetic_set(store, "bugs@tiny", X, y, ["a", "b", "c"])
    return store


def test_a_set_beyond_the_memory_budget_is_refused_naming_the_way_out(big, monkeypatch):
    """Kinds that do not stream (and `fit-head all`) are refused at once, naming the sample and
    the kinds that stream."""
    monkeypatch.setattr(training_data, "MEMORY_SHARE", 1e-12)
    with pytest.raises(DatasetError, match="holds 120 rows x 12 features.*pass --max-train-rows.*--stream"):
        fit_head("svm", ["bugs@tiny"], store=str(big), emissions=False, kernel="linear")
    out = CliRunner().invoke(app, ["fit-head", "all", "--features", "bugs@tiny", "--store", str(big)])
    assert out.exit_code == 1 and "--max-train-rows" in out.stderr and "Traceback" not in out.output


def test_max_train_rows_fits_on_a_stratified_sample_said_in_one_line(big):
    args = ["fit-head", "logistic", "--features", "bugs@tiny", "--store", str(big), "--no-emissions"]
    out = CliRunner().invoke(app, [*args, "--max-train-rows", "30", "--C", "1", "--name", "small"])
    assert out.exit_code == 0, out.output
    assert "fitting on a stratified sample of 30 images" in out.stderr
    split = read_meta(resolve_store(big), "small")["split"]
    assert split["n_train"] + split["n_val"] + split["n_test"] == 30
    again = CliRunner().invoke(app, [*args, "--max-train-rows", "30", "--C", "1", "--name", "small2"])
    assert again.exit_code == 0
    assert read_meta(resolve_store(big), "small2")["split"] == split  # the same images every time
    bad = CliRunner().invoke(app, [*args, "--max-train-rows", "3"])
    assert bad.exit_code == 2 or "at least 10" in bad.stderr


def test_rbf_svm_and_knn_refuse_above_their_size_at_once(big, monkeypatch):
    monkeypatch.setattr(svm, "RBF_MAX_ROWS", 20)
    monkeypatch.setattr(knn, "MAX_ROWS", 20)
    with pytest.raises(HeadError, match="rbf kernel on .* would take hours.*--kernel linear"):
        fit_head("svm", ["bugs@tiny"], store=str(big), emissions=False)
    with pytest.raises(HeadError, match="knn compares every image.*featstore search"):
        fit_head("knn", ["bugs@tiny"], store=str(big), emissions=False)
    (r,) = fit_head("svm", ["bugs@tiny"], store=str(big), emissions=False, kernel="linear")
    assert r.metrics["test"]["accuracy"] > 0.5


def test_logistic_and_dense_stream_their_rows_from_the_shards(big, monkeypatch):
    """Beyond the budget a logistic head streams without asking (said in one line, peak memory
    said and kept in the meta); `--stream` asks for it. No read holds more than a block of rows,
    the heads score like those fitted in memory, and `evaluate` scores a set beyond the budget
    block by block."""
    import numpy as np

    from featstore.heads import metrics, streaming
    from featstore.store.shards import ShardedReader

    monkeypatch.setattr(streaming, "BLOCK_ROWS", 16)
    monkeypatch.setattr(metrics, "SCORE_ROWS", 16)
    reads, real = [], ShardedReader.read_features
    monkeypatch.setattr(
        ShardedReader,
        "read_features",
        lambda self, rows=None: reads.append(np.size(rows)) or real(self, rows),
    )
    monkeypatch.setattr(training_data, "MEMORY_SHARE", 1e-12)
    args = ["fit-head", "logistic", "--features", "bugs@tiny", "--store", str(big), "--no-emissions"]
    out = CliRunner().invoke(app, [*args, "--C", "0.1,1", "--name", "streamed-logistic"])
    assert out.exit_code == 0, out.output
    assert "streaming 84 training rows" in out.stderr and "peak memory" in out.stderr
    meta = read_meta(resolve_store(big), "streamed-logistic")
    assert meta["streamed"]["train_rows"] == 84 and meta["streamed"]["peak_memory_gb"] > 0
    assert meta["metrics"]["test"]["accuracy"] > 0.9 and max(reads) <= 16
    from featstore.heads.thresholds import held_out  # the unknown answer's threshold, chosen on val
    from featstore.store.head_files import load_head

    estimator, meta = load_head(resolve_store(big), "streamed-logistic")
    proba, y_val, where = held_out(resolve_store(big), "streamed-logistic", estimator, meta)
    assert proba.shape == (len(y_val), 3) and where == "validation images" and max(reads) <= 16
    import onnxruntime as ort  # the streamed head is an ordinary pipeline: it exports as one

    from featstore.heads.onnx_graphs import sklearn_graph

    graph, _ = sklearn_graph(estimator, 12, 17)
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    X = np.random.default_rng(0).normal(size=(5, 12)).astype(np.float32)
    got = [o for o in session.run(None, {session.get_inputs()[0].name: X}) if np.ndim(o) == 2][-1]
    np.testing.assert_allclose(got, estimator.predict_proba(X), atol=1e-6)
    monkeypatch.undo()
    (dense,) = fit_head(
        "dense", ["bugs@tiny"], store=str(big), emissions=False, stream=True, name="streamed-dense"
    )
    (memory,) = fit_head("dense", ["bugs@tiny"], store=str(big), emissions=False)
    assert dense.metrics["test"]["accuracy"] >= memory.metrics["test"]["accuracy"] - 0.1
    assert read_meta(resolve_store(big), "streamed-dense")["streamed"]["train_rows"] == 84
    monkeypatch.setattr(training_data, "MEMORY_SHARE", 1e-12)  # scored from the shards too
    evaluated = CliRunner().invoke(
        app, ["evaluate", "--head", "streamed-dense", "-f", "bugs@tiny", "--store", str(big)]
    )
    assert evaluated.exit_code == 0, evaluated.output


def test_a_threshold_without_validation_images_on_a_set_beyond_the_budget_is_refused(big, monkeypatch):
    """Out-of-fold predictions would hold the set in memory: one line naming --reject-below."""
    from featstore.heads.thresholds import held_out
    from featstore.store.head_files import load_head

    fit_head(
        "logistic",
        ["bugs@tiny"],
        store=str(big),
        emissions=False,
        stream=True,
        C=1,
        val_size=0,
        name="no-val",
    )
    monkeypatch.setattr(training_data, "MEMORY_SHARE", 1e-12)
    estimator, meta = load_head(resolve_store(big), "no-val")
    with pytest.raises(HeadError, match="no validation part.*too large.*--reject-below"):
        held_out(resolve_store(big), "no-val", estimator, meta)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"kind": "svm"}, "stream: fits dense and logistic heads; for svm use --max-train-rows"),
        ({"kind": "all"}, "stream: fits one head at a time"),
        ({"kind": "logistic", "max_rows": 50}, "stream: reads every row; drop --max-train-rows"),
        ({"kind": "logistic", "select": "cv"}, "stream: scores on the validation images"),
    ],
)
def test_what_streaming_does_not_do_is_refused_at_once(big, kw, message):
    from featstore.errors import InvalidOptionError

    with pytest.raises(InvalidOptionError, match=message):
        fit_head(kw.pop("kind"), ["bugs@tiny"], store=str(big), emissions=False, stream=True, **kw)


def test_max_rows_is_refused_where_images_not_rows_are_split():
    from featstore.data.options import SplitOptions
    from featstore.errors import InvalidOptionError
    from featstore.finetune.options import FinetuneOptions

    with pytest.raises(InvalidOptionError, match="max_rows: is for fitting heads.*finetune does not take it"):
        FinetuneOptions(split=SplitOptions(max_rows=100)).check()
    with pytest.raises(InvalidOptionError, match="inspect leaks does not take it"):
        SplitOptions(max_rows=100).of_images("inspect leaks")
    with pytest.raises(InvalidOptionError, match="at least 10"):
        SplitOptions(max_rows=3).check()
