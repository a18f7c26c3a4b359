"""A calibrated head exports with its calibration map inside the ONNX file (temperature and
sigmoid); isotonic calibration refuses export in one line."""

from __future__ import annotations

import pytest
from conftest import copy_store, via_store
from test_deploy import colour_store  # noqa: F401  (a fixture)

from featstore.errors import ExportError
from featstore.scoring.deploy import export_head

fit_head = via_store("fit_head")


@pytest.mark.parametrize("method", ["temperature", "sigmoid"])
def test_a_calibrated_head_exports_with_its_map(tmp_path, colour_store, method):  # noqa: F811
    src, _ = colour_store
    store = copy_store(src, tmp_path / "store")
    (head,) = fit_head("knn", ["colours@tiny"], store=str(store), emissions=False, k=1, calibrate=method)
    result = export_head(head.head_id, tmp_path / "m.onnx", store=str(store))
    assert result.max_abs_diff < 1e-4  # checked against featstore's own scoring before writing


def test_isotonic_calibration_does_not_export(tmp_path, colour_store):  # noqa: F811
    src, _ = colour_store
    store = copy_store(src, tmp_path / "store")
    (head,) = fit_head("knn", ["colours@tiny"], store=str(store), emissions=False, calibrate="isotonic")
    with pytest.raises(ExportError, match="isotonic calibration has no ONNX conversion"):
        export_head(head.head_id, tmp_path / "m.onnx", store=str(store))
    assert not (tmp_path / "m.onnx").exists()
