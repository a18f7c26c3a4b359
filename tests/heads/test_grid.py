"""A sweep's grid: the default, grid files (JSON, YAML), and every way a grid can be wrong."""

from __future__ import annotations

import json

import pytest

from featstore.errors import InvalidOptionError
from featstore.heads.grid import DEFAULT_GRID, MAX_SETTINGS, expand_grid
from featstore.heads.kinds.dense import DenseParams
from featstore.heads.kinds.knn import KnnParams
from featstore.heads.kinds.logistic import LogisticParams
from featstore.heads.kinds.svm import SvmParams
from featstore.heads.registry import make_params


def test_the_default_grid_has_every_kind_and_at_least_20_settings():
    settings = expand_grid(None)
    assert len(settings) == 22 and {s.kind for s in settings} == {"svm", "logistic", "dense", "knn"}
    labels = [s.label for s in settings]
    assert len(set(labels)) == len(labels)
    assert "svm kernel=linear C=0.001" in labels and "dense hidden=512 dropout=0.2" in labels
    assert {s.params.scale for s in settings if s.kind == "logistic"} == {"standard", "l2"}
    assert {s.params.scale for s in settings if s.kind == "knn"} == {"none", "standard"}
    assert all(s.params.kind == s.kind for s in settings)
    assert expand_grid(DEFAULT_GRID) == settings


def test_lists_are_alternatives_and_lists_of_mappings_add_up():
    grid = {
        "svm": [{"kernel": "rbf", "C": [1, 10]}, {"kernel": "linear", "C": 0.01}],
        "dense": {"hidden": [64, [32, 16]], "dropout": 0.1},
    }
    settings = expand_grid(
        grid, make_params("all", {"epochs": 3, "class_weight": "balanced", "random_state": 7})
    )
    assert [s.label for s in settings] == [
        "svm kernel=rbf C=1",
        "svm kernel=rbf C=10",
        "svm kernel=linear C=0.01",
        "dense hidden=64 dropout=0.1",
        "dense hidden=32,16 dropout=0.1",
    ]
    assert settings[2].params.c == 0.01 and settings[4].params.hidden == (32, 16)
    assert all(s.params.class_weight == "balanced" and s.params.random_state == 7 for s in settings)
    assert settings[3].params.epochs == 3


def test_class_weights_reach_only_the_kinds_that_take_them():
    base = make_params("all", {"class_weight": "balanced"})
    settings = expand_grid({"knn": {"k": [3]}, "logistic": {"C": [1]}}, base)
    assert [getattr(s.params, "class_weight", None) for s in settings] == [None, "balanced"]
    assert expand_grid({"knn": {"k": [3, 3]}})[0].shown == {"k": 3}  # duplicates once
    assert isinstance(settings[0].params, KnnParams) and isinstance(settings[1].params, LogisticParams)
    assert SvmParams in {type(s.params) for s in expand_grid(None)} and DenseParams


def test_grid_files_json_and_yaml(tmp_path):
    path = tmp_path / "grid.json"
    path.write_text(json.dumps({"logistic": {"C": [0.1, 1]}}))
    assert [s.label for s in expand_grid(str(path))] == ["logistic C=0.1", "logistic C=1"]
    pytest.importorskip("yaml")
    yml = tmp_path / "grid.yaml"
    yml.write_text("knn:\n  k: [1, 5]\n  scale: [none, l2]\nsvm:\n  - {kernel: rbf, C: 3}\n")
    assert [s.label for s in expand_grid(yml)] == [
        "knn k=1 scale=none",
        "knn k=1 scale=l2",
        "knn k=5 scale=none",
        "knn k=5 scale=l2",
        "svm kernel=rbf C=3",
    ]


@pytest.mark.parametrize(
    "text,suffix,message",
    [
        (None, ".json", r"^grid: no grid file .*missing\.json$"),
        ("{not json", ".json", r"^grid: .*bad\.json is not valid JSON: "),
        ("knn: [k: 1", ".yaml", r"^grid: .*bad\.yaml is not valid YAML: "),
        ("[1, 2]", ".json", r"^grid: .*bad\.json must map head kinds to settings"),
        ("{}", ".json", r"^grid: .*bad\.json must map head kinds to settings"),
        (
            '{"forest": {"depth": [2]}}',
            ".json",
            r"^grid: .*: unknown head 'forest'; a grid holds svm, logistic, dense, knn$",
        ),
        (
            '{"ensemble": {}}',
            ".json",
            r"^grid: .*: ensemble heads are made from saved heads, not fitted; --ensemble K",
        ),
        (
            '{"logistic": {"gamma": [1]}}',
            ".json",
            r"^grid: .*: logistic has no setting 'gamma'; logistic takes scale, C, class_weight$",
        ),
        (
            '{"knn": {"k": [0]}}',
            ".json",
            r"^grid: .*: knn \{'k': 0\}: k: must be a whole number of at least 1, not 0$",
        ),
        (
            '{"svm": {"kernel": ["poly"]}}',
            ".json",
            r"^grid: .*: svm \{'kernel': 'poly'\}: kernel: must be one of rbf, linear",
        ),
        (
            '{"knn": 5}',
            ".json",
            r"^grid: .*: knn must map to settings \(a mapping, or a list of mappings\), not 5$",
        ),
        (
            '{"knn": {"class_weight": "balanced"}}',
            ".json",
            r"^grid: .*: knn has no setting 'class_weight'; knn takes scale, k$",
        ),
    ],
)
def test_a_bad_grid_is_one_clear_error(tmp_path, text, suffix, message):
    if suffix == ".yaml":
        pytest.importorskip("yaml")
    path = tmp_path / ("missing.json" if text is None else f"bad{suffix}")
    if text is not None:
        path.write_text(text)
    with pytest.raises(InvalidOptionError, match=message) as err:
        expand_grid(str(path))
    assert err.value.param == "grid" and "\n" not in str(err.value)


def test_a_grid_too_large_is_refused():
    with pytest.raises(InvalidOptionError, match=f"settings; a sweep fits at most {MAX_SETTINGS}$"):
        expand_grid({"knn": {"k": list(range(1, MAX_SETTINGS + 2))}})


def test_a_yaml_grid_without_pyyaml_says_what_to_do(tmp_path, monkeypatch):
    import sys

    path = tmp_path / "grid.yml"
    path.write_text("knn:\n  k: [1]\n")
    monkeypatch.setitem(sys.modules, "yaml", None)  # PyYAML not installed
    with pytest.raises(
        InvalidOptionError, match=r"grid\.yml is YAML, and PyYAML is not installed: pip install pyyaml"
    ):
        expand_grid(path)
    with pytest.raises(InvalidOptionError, match="^grid: no grid file "):
        expand_grid(tmp_path)  # a folder
