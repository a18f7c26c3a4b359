"""The head-kind registry, head options as objects, and the typed run records of fit-head and
evaluate; a new kind is one registration, fitted and evaluated through the library."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest
from conftest import blobs, via_store, write_synthetic_set

from featstore.data.options import SplitOptions
from featstore.errors import ExportError, HeadError, InvalidOptionError
from featstore.heads.fitting import fit_head as fit_objects
from featstore.heads.kinds.dense import DenseParams
from featstore.heads.kinds.knn import KnnParams
from featstore.heads.kinds.logistic import LogisticParams
from featstore.heads.kinds.svm import SvmParams
from featstore.heads.onnx_graphs import head_model
from featstore.heads.params import HeadParams, make_scaler, parse_floats, parse_ints
from featstore.heads.registry import (
    HeadKind,
    available_head_kinds,
    get_head_kind,
    make_params,
    register_head_kind,
    trainable_params,
    unregister_head_kind,
)
from featstore.options import JobOptions
from featstore.store.head_files import load_head, read_meta
from featstore.store.layout import resolve_store
from featstore.store.runlog import EvaluateRecord, FitRecord, read_records

CLASSES = ["ant", "bee", "cow"]
fit_head, evaluate = via_store("fit_head"), via_store("evaluate")


@pytest.fixture
def blob_store(tmp_path):
    X, y = blobs()
    write_synthetic_set(tmp_path / "store", "bugs@tiny", X, y, CLASSES)
    return tmp_path / "store"


@dataclass(frozen=True)
class BayesParams(HeadParams):
    """bayes: Gaussian naive Bayes on features scaled by `scale`."""

    kind: ClassVar[str] = "bayes"
    scale: str = "standard"


def _build_bayes(params: BayesParams, context):
    from sklearn.naive_bayes import GaussianNB
    from sklearn.pipeline import Pipeline

    return Pipeline([("scale", make_scaler(params.scale)), ("clf", GaussianNB())])


@pytest.fixture
def bayes_kind():
    """A kind registered for one test: Gaussian naive Bayes, no ONNX conversion."""
    kind = register_head_kind(
        HeadKind(BayesParams, build=_build_bayes, count_params=lambda config, d, c: 2 * d * c)
    )
    yield kind
    unregister_head_kind("bayes")


def test_the_built_in_kinds_and_an_unknown_one():
    assert available_head_kinds() == ["svm", "logistic", "dense", "knn", "ensemble"]
    assert get_head_kind("knn").params is KnnParams and KnnParams().scale == "standard"
    with pytest.raises(
        HeadError,
        match=r"^unknown head 'forest'; valid heads: svm, logistic, dense, knn, ensemble, all, sweep$",
    ):
        get_head_kind("forest")
    with pytest.raises(HeadError, match="registered already"):
        register_head_kind(HeadKind(SvmParams, build=_build_bayes))
    for reserved in ("all", "sweep"):
        params = dataclass(frozen=True)(type("P", (HeadParams,), {"kind": reserved, "__annotations__": {}}))
        with pytest.raises(HeadError, match="cannot name a head kind"):
            register_head_kind(HeadKind(params, build=_build_bayes))


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
    assert trainable_params(meta) == 2 * 12 * 3
    estimator, _ = load_head(layout, "nb")
    with pytest.raises(ExportError, match="bayes heads have no ONNX conversion"):
        head_model(estimator, 12, 3, kind="bayes")
    with pytest.raises(ExportError, match="heads of type Pipeline cannot be exported"):
        head_model(estimator, 12, 3)  # no registered kind owns it


def test_head_params_per_kind():
    meta = {"sources": [{"n_features": 6}, {"n_features": 4}], "class_names": ["a", "b", "c"]}
    assert trainable_params({**meta, "config": {"kind": "logistic"}}) == 11 * 3
    assert trainable_params({**meta, "class_names": ["a", "b"], "config": {"kind": "logistic"}}) == 11
    assert trainable_params({**meta, "config": {"kind": "dense", "hidden": [16]}}) == 11 * 16 + 17 * 3
    assert trainable_params({**meta, "config": {"kind": "svm"}}) is None
    assert trainable_params({**meta, "config": {"kind": "gone"}}) is None
    assert (
        trainable_params({"sources": [{}], "class_names": ["a", "b"], "config": {"kind": "logistic"}}) is None
    )


@pytest.mark.parametrize(
    "params,param",
    [
        (SvmParams(scale="max"), "scale"),
        (SvmParams(kernel="poly"), "kernel"),
        (LogisticParams(C=(0.0,)), "C"),
        (LogisticParams(C=(float("nan"),)), "C"),
        (SvmParams(C=0.0), "C"),
        (DenseParams(hidden=(16, 0)), "hidden"),
        (DenseParams(dropout=1.0), "dropout"),
        (DenseParams(epochs=0), "epochs"),
        (KnnParams(k=0), "k"),
        (DenseParams(patience=-1), "patience"),
        (DenseParams(learning_rate=0), "learning_rate"),
    ],
)
def test_bad_head_parameters_name_their_field(params, param):
    with pytest.raises(InvalidOptionError) as err:
        params.check()
    assert err.value.param == param and str(err.value).startswith(f"{param}: ")


def test_each_kind_owns_its_parameters():
    logistic, hidden = LogisticParams(C=[0.5, 2]), DenseParams(hidden=32)
    assert logistic.C == (0.5, 2) and hidden.hidden == (32,)
    with pytest.raises(AttributeError):
        KnnParams().k = 3  # frozen
    svm = SvmParams(kernel="linear")
    assert svm.c == 0.001 and SvmParams().c == 10.0 and SvmParams(C=[5.0]).C == 5.0
    assert svm.to_dict() == {
        "kind": "svm", "scale": "standard", "C": 0.001, "kernel": "linear", "class_weight": None, "random_state": 0,
    }  # fmt: skip
    assert SvmParams.from_dict(svm.to_dict()).c == svm.c and KnnParams.names() == ["scale", "k"]
    with pytest.raises(InvalidOptionError, match="^C: svm takes one value"):
        SvmParams(C=(1.0, 2.0)).check()
    assert parse_floats("0.1, 1") == (0.1, 1.0) and parse_ints("512,128") == (512, 128)
    with pytest.raises(InvalidOptionError, match="^C: must be a comma-separated list of numbers"):
        parse_floats("0.1,abc")
    with pytest.raises(InvalidOptionError, match="^hidden: must be a comma-separated list of integers"):
        parse_ints("wide")


def test_values_by_name_go_to_the_kinds_that_have_them():
    svm, logistic, dense, knn = make_params(
        "all", {"epochs": 2, "class_weight": "balanced", "random_state": 3}
    )
    assert dense.epochs == 2 and {p.random_state for p in (svm, logistic, dense, knn)} == {3}
    assert (svm.class_weight, logistic.class_weight, dense.class_weight) == ("balanced",) * 3
    assert make_params("knn", {"k": 3}) == [KnnParams(k=3)]
    with pytest.raises(
        InvalidOptionError, match=r"^epochs: is not an option of knn heads \(knn takes scale, k\)$"
    ):
        make_params("knn", {"epochs": 3})
    with pytest.raises(InvalidOptionError, match="^depth: is not an option of any head kind"):
        make_params("all", {"depth": 3})
    with pytest.raises(HeadError, match="ensemble heads are made from saved heads"):
        make_params("ensemble", {})


def test_options_objects_and_flat_keywords_give_one_head(blob_store):
    job = JobOptions(store=str(blob_store), emissions=False)
    (a,) = fit_objects(
        LogisticParams(C=(1.0,), random_state=3),
        ["bugs@tiny"],
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
        InvalidOptionError, match=r"^batch_size: unknown option; valid ones: C, class_weight, dropout, "
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
    with pytest.raises(InvalidOptionError, match=r"^class_weight: is not an option of knn heads \(knn takes"):
        fit_head("knn", ["bugs@tiny"], store=str(store), emissions=False, class_weight="balanced")
    with pytest.raises(InvalidOptionError, match="^class_weight: must be one of balanced, not 'heavy'$"):
        LogisticParams(class_weight="heavy").check()


def test_knn_answers_more_than_one_class_on_features_of_a_random_network(tmp_path):
    """Features of a network with random weights are all positive with norms near 1e-10 (the
    demo's, offline): cosine distance on them as they are gives every image the same neighbours
    and one class; standardised first (knn's default) they separate as well as the others."""
    import numpy as np

    X, y = blobs()
    tiny = ((X - X.min()) * 1e-11 + 1e-10).astype(np.float32)
    write_synthetic_set(tmp_path / "s", "bugs@random", tiny, y, CLASSES)
    (r,) = fit_head("knn", ["bugs@random"], store=str(tmp_path / "s"), emissions=False, name="k")
    assert r.config["scale"] == "standard" and r.metrics["test"]["accuracy"] > 0.9
    (raw,) = fit_head("knn", ["bugs@random"], store=str(tmp_path / "s"), emissions=False, scale="none")
    assert raw.metrics["test"]["accuracy"] < 0.5  # what the old default gave: one class, chance
