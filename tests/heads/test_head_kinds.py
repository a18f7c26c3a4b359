"""The head-kind registry, head options as objects, and the typed run records of fit-head and
evaluate; a new kind is one registration, fitted and evaluated through the library."""

from __future__ import annotations

import pytest
from conftest import blobs, write_synthetic_set

from featstore.data.splits import SplitOptions
from featstore.errors import ExportError, HeadError, InvalidOptionError
from featstore.heads import (
    HeadConfig,
    HeadKind,
    available_head_kinds,
    evaluate,
    fit_head,
    get_head_kind,
    head_params,
    register_head_kind,
    unregister_head_kind,
)
from featstore.heads.onnx_graphs import head_model
from featstore.heads.options import make_scaler, parse_floats, parse_ints
from featstore.jobs import JobOptions
from featstore.store.head_files import load_head, read_meta
from featstore.store.layout import resolve_store
from featstore.store.runlog import EvaluateRecord, FitRecord, read_records

CLASSES = ["ant", "bee", "cow"]


@pytest.fixture
def blob_store(tmp_path):
    X, y = blobs()
    write_synthetic_set(tmp_path / "store", "bugs@tiny", X, y, CLASSES)
    return tmp_path / "store"


def _build_bayes(config: HeadConfig, context):
    from sklearn.naive_bayes import GaussianNB
    from sklearn.pipeline import Pipeline

    return Pipeline([("scale", make_scaler(config.scale)), ("clf", GaussianNB())])


@pytest.fixture
def bayes_kind():
    """A kind registered for one test: Gaussian naive Bayes, no ONNX conversion."""
    kind = register_head_kind(
        HeadKind("bayes", build=_build_bayes, count_params=lambda config, d, c: 2 * d * c)
    )
    yield kind
    unregister_head_kind("bayes")


def test_the_built_in_kinds_and_an_unknown_one():
    assert available_head_kinds() == ["svm", "logistic", "dense", "knn", "ensemble"]
    assert get_head_kind("knn").default_scale == "none" and get_head_kind("svm").c_grid is False
    with pytest.raises(
        HeadError,
        match=r"^unknown head 'forest'; valid heads: svm, logistic, dense, knn, ensemble, all, sweep$",
    ):
        get_head_kind("forest")
    with pytest.raises(HeadError, match="registered already"):
        register_head_kind(HeadKind("svm", build=_build_bayes))
    for reserved in ("all", "sweep"):
        with pytest.raises(HeadError, match="cannot name a head kind"):
            register_head_kind(HeadKind(reserved, build=_build_bayes))


def test_a_new_kind_is_one_registration(blob_store, bayes_kind):
    assert available_head_kinds()[-1] == "bayes"
    with pytest.raises(
        HeadError, match="valid heads: svm, logistic, dense, knn, ensemble, bayes, all, sweep"
    ):
        get_head_kind("forest")
    (r,) = fit_head("bayes", ["bugs@tiny"], store=str(blob_store), emissions=False, name="nb")
    assert r.kind == "bayes" and r.config == {"kind": "bayes", "scale": "standard", "random_state": 0}
    assert r.metrics["test"]["accuracy"] > 0.9 and (blob_store / "heads" / "nb" / "card.md").is_file()
    ev = evaluate("nb", ["bugs@tiny"], store=str(blob_store))
    assert ev.n_rows == 90 and ev.metrics["accuracy"] > 0.9
    layout = resolve_store(blob_store)
    meta = read_meta(layout, "nb")
    assert head_params(meta) == 2 * 12 * 3
    estimator, _ = load_head(layout, "nb")
    with pytest.raises(ExportError, match="bayes heads have no ONNX conversion"):
        head_model(estimator, 12, 3, kind="bayes")
    with pytest.raises(ExportError, match="heads of type Pipeline cannot be exported"):
        head_model(estimator, 12, 3)  # no registered kind owns it


def test_head_params_per_kind():
    meta = {"sources": [{"n_features": 6}, {"n_features": 4}], "class_names": ["a", "b", "c"]}
    assert head_params({**meta, "config": {"kind": "logistic"}}) == 11 * 3
    assert head_params({**meta, "class_names": ["a", "b"], "config": {"kind": "logistic"}}) == 11
    assert head_params({**meta, "config": {"kind": "dense", "hidden": [16]}}) == 11 * 16 + 17 * 3
    assert head_params({**meta, "config": {"kind": "svm"}}) is None
    assert head_params({**meta, "config": {"kind": "gone"}}) is None
    assert head_params({"sources": [{}], "class_names": ["a", "b"], "config": {"kind": "logistic"}}) is None


@pytest.mark.parametrize(
    "options,param",
    [
        ({"scale": "max"}, "scale"),
        ({"kernel": "poly"}, "kernel"),
        ({"C": (0.0,)}, "C"),
        ({"C": (float("nan"),)}, "C"),
        ({"hidden": (16, 0)}, "hidden"),
        ({"dropout": 1.0}, "dropout"),
        ({"epochs": 0}, "epochs"),
        ({"k": 0}, "k"),
        ({"patience": -1}, "patience"),
        ({"learning_rate": 0}, "learning_rate"),
    ],
)
def test_bad_head_options_name_their_parameter(options, param):
    with pytest.raises(InvalidOptionError) as err:
        HeadConfig(**options).check()
    assert err.value.param == param and str(err.value).startswith(f"{param}: ")


def test_head_config_defaults_kinds_and_lists():
    config = HeadConfig(C=[0.5, 2], hidden=[32])
    assert config.C == (0.5, 2) and config.hidden == (32,)
    with pytest.raises(AttributeError):
        config.k = 3  # frozen
    svm = HeadConfig(kernel="linear").for_kind("svm")
    assert svm.C == (0.001,) and svm.scale == "standard"
    assert svm.to_dict() == {
        "kind": "svm",
        "scale": "standard",
        "C": [0.001],
        "kernel": "linear",
        "class_weight": None,
        "random_state": 0,
    }
    assert HeadConfig.from_dict(svm.to_dict()) == svm
    assert HeadConfig().for_kind("knn").scale == "none" and HeadConfig().for_kind("knn").C is None
    assert HeadConfig(C=(5.0,)).for_kind("svm", keep_C=False).C == (10.0,)  # `all`: --C is logistic's
    with pytest.raises(InvalidOptionError, match="^C: svm takes one value"):
        HeadConfig(C=(1.0, 2.0)).for_kind("svm")
    assert parse_floats("0.1, 1") == (0.1, 1.0) and parse_ints("512,128") == (512, 128)
    with pytest.raises(InvalidOptionError, match="^C: must be a comma-separated list of numbers"):
        parse_floats("0.1,abc")
    with pytest.raises(InvalidOptionError, match="^hidden: must be a comma-separated list of integers"):
        parse_ints("wide")


def test_options_objects_and_flat_keywords_give_one_head(blob_store):
    job = JobOptions(store=str(blob_store), emissions=False)
    (a,) = fit_head(
        "logistic",
        ["bugs@tiny"],
        head=HeadConfig(C=(1.0,), random_state=3),
        split=SplitOptions(test_size=0.3, seed=3),
        job=job,
    )
    (b,) = fit_head(
        "logistic", ["bugs@tiny"], store=str(blob_store), emissions=False, C=[1.0], test_size=0.3, seed=3
    )
    assert (
        a.config
        == b.config
        == {
            "kind": "logistic",
            "scale": "standard",
            "C": [1.0],
            "class_weight": None,
            "random_state": 3,
        }
    )
    assert a.split == b.split and a.metrics == b.metrics
    with pytest.raises(
        InvalidOptionError, match=r"^batch_size: unknown option; valid ones: C, class_weight, country, "
    ):
        fit_head("logistic", ["bugs@tiny"], job=job, batch_size=3)
    with pytest.raises(InvalidOptionError, match="^features: lists a feature set twice"):
        fit_head("logistic", ["bugs@tiny", "bugs@tiny"], job=job)


def test_fit_and_evaluate_are_typed_run_records(blob_store):
    (r,) = fit_head("knn", ["bugs@tiny"], store=str(blob_store), emissions=False, name="k")
    ev = evaluate("k", ["bugs@tiny"], job=JobOptions(store=str(blob_store), emissions=False))
    records, notes = read_records(resolve_store(blob_store))
    fit, evaluated = records
    assert notes == [] and isinstance(fit, FitRecord) and isinstance(evaluated, EvaluateRecord)
    assert fit.head_id == "k" and fit.kind == "knn" and fit.seconds == r.fit_seconds
    assert fit.id == read_meta(resolve_store(blob_store), "k")["run_id"] and fit.dataset == "bugs"
    assert fit.counts == {"n_train": 63, "n_val": 9, "n_test": 18, "n_augmented_train": 0}
    assert fit.metrics["test"]["accuracy"] == r.metrics["test"]["accuracy"]
    assert evaluated.id == ev.run_id and evaluated.seconds == ev.seconds and evaluated.path == ev.path
    assert evaluated.emissions["note"] == "emissions tracking off" and evaluated.energy_kwh is None


def test_the_fit_is_measured_and_the_meta_agrees_with_the_run_log(blob_store, monkeypatch):
    monkeypatch.setenv("FEATSTORE_COUNTRY", "FRA")
    (r,) = fit_head("logistic", ["bugs@tiny"], store=str(blob_store), name="m")
    meta = read_meta(resolve_store(blob_store), "m")
    (record,), _ = read_records(resolve_store(blob_store))
    assert meta["emissions"] == record.emissions == r.emissions.to_dict()
    assert record.emissions["country"] == "FRA" and record.energy_kwh == r.emissions.energy_kwh


def test_old_dense_pickles_find_their_class():
    import pickle

    from featstore.heads.dense import DenseHead

    for module in ("featstore.heads", "featstore.heads.kinds"):
        data = pickle.dumps(DenseHead(hidden=(4,)), protocol=2)  # the class by module and name, as text
        data = data.replace(b"featstore.heads.dense\n", module.encode() + b"\n")
        assert module.encode() in data and pickle.loads(data).hidden == (4,)


def test_class_weights_for_every_kind_that_has_weights(tmp_path):
    import numpy as np

    X, y = blobs(n_per_class=30)
    keep = np.concatenate([np.flatnonzero(y != 2), np.flatnonzero(y == 2)[:8]])  # cow is rare
    store = tmp_path / "s"
    write_synthetic_set(store, "bugs@tiny", X[keep], y[keep], CLASSES)
    results = fit_head(
        "all", ["bugs@tiny"], store=str(store), emissions=False, class_weight="balanced", epochs=2, name="w"
    )
    configs = {r.kind: r.config for r in results}
    assert {k: c.get("class_weight", "-") for k, c in configs.items()} == {
        "svm": "balanced", "logistic": "balanced", "dense": "balanced", "knn": "-",
    }  # fmt: skip
    layout = resolve_store(store)
    logistic, _ = load_head(layout, "w-logistic")
    svm, _ = load_head(layout, "w-svm")
    dense, _ = load_head(layout, "w-dense")
    assert logistic[-1].class_weight == "balanced"
    assert svm[-1].estimator.class_weight == "balanced"
    weights = dense._weights(y[keep])
    assert weights[2] > weights[0] and weights[2] == pytest.approx(len(keep) / (3 * 8))
    with pytest.raises(
        InvalidOptionError, match="^class_weight: knn heads take no class weights; leave it out"
    ):
        fit_head("knn", ["bugs@tiny"], store=str(store), emissions=False, class_weight="balanced")
    with pytest.raises(InvalidOptionError, match="^class_weight: must be one of balanced, not 'heavy'$"):
        HeadConfig(class_weight="heavy").check()
