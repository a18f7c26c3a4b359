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
    monkeypatch.setattr(training_data, "MEMORY_SHARE", 1e-12)
    with pytest.raises(DatasetError, match="holds 120 rows x 12 features.*pass --max-train-rows"):
        fit_head("logistic", ["bugs@tiny"], store=str(big), emissions=False)
    out = CliRunner().invoke(app, ["fit-head", "logistic", "--features", "bugs@tiny", "--store", str(big)])
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
