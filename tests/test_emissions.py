"""codecarbon's offline tracker: measured, estimated, off, lazy, and never fatal."""

from __future__ import annotations

import pytest

from featstore.emissions import DEFAULT_COUNTRY, resolve_country, track_emissions


def test_measures_a_step(tmp_path):
    with track_emissions(True, "fra", tmp_path) as tracker:
        sum(i * i for i in range(200_000))
    e = tracker.result
    assert e.country == "FRA"
    assert e.energy_kwh is not None and e.energy_kwh >= 0 and e.co2_kg >= 0, e
    if e.estimated:
        assert e.note.startswith("estimate")


def test_off(tmp_path):
    with track_emissions(False, None, tmp_path) as tracker:
        pass
    assert tracker.result.energy_kwh is None and tracker.result.note == "emissions tracking off"


def test_lazy_without_work_measures_nothing(tmp_path):
    with track_emissions(True, None, tmp_path, lazy=True) as tracker:
        pass
    assert (tracker.result.energy_kwh, tracker.result.co2_kg) == (0.0, 0.0)
    assert "nothing was computed" in tracker.result.note


def test_a_failing_tracker_never_fails_the_step(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    with track_emissions(True, "NOT-A-COUNTRY", blocker / "sub") as tracker:
        value = 42
    assert value == 42
    assert tracker.result.energy_kwh is None and tracker.result.note.startswith("emissions not measured")


def test_step_errors_pass_through(tmp_path):
    with pytest.raises(ZeroDivisionError):
        with track_emissions(True, None, tmp_path):
            1 / 0  # noqa: B018


def test_country_resolution(monkeypatch):
    monkeypatch.delenv("FEATSTORE_COUNTRY", raising=False)
    assert resolve_country(None) == DEFAULT_COUNTRY
    monkeypatch.setenv("FEATSTORE_COUNTRY", "deu")
    assert resolve_country(None) == "DEU" and resolve_country("swe") == "SWE"
