"""Energy and CO2 of a step from codecarbon's offline tracker; never makes a step fail.

The tracker starts in a background thread (its hardware probe takes a second); without
codecarbon the figures stay None with a note.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from featstore.deps import available
from featstore.options import Record

#: Country used when neither --country nor $FEATSTORE_COUNTRY says (ISO 3166 alpha-3).
DEFAULT_COUNTRY = "USA"
_MEASURED_MODES = {"intel_rapl", "apple_powermetrics", "intel_power_gadget"}
#: The note of a step measured where codecarbon is missing.
MISSING_NOTE = "emissions not measured: codecarbon is not installed (pip install codecarbon)"


@dataclass
class Emissions(Record):
    """What codecarbon measured for one step. Figures are None when tracking was off or failed."""

    energy_kwh: float | None = None
    co2_kg: float | None = None
    country: str | None = None
    estimated: bool | None = None
    note: str | None = None


def resolve_country(country: str | None) -> str:
    """Return `country`, else $FEATSTORE_COUNTRY, else DEFAULT_COUNTRY, upper-cased."""
    return (country or os.environ.get("FEATSTORE_COUNTRY") or DEFAULT_COUNTRY).upper()


def _quiet() -> None:
    os.environ.setdefault("CODECARBON_LOG_LEVEL", "critical")
    logging.getLogger("codecarbon").setLevel(logging.CRITICAL)
    logging.getLogger("codecarbon").propagate = False


class EmissionsTracker:
    """Runs codecarbon's offline tracker around a step; `result` holds the figures after `finish`."""

    def __init__(self, enabled: bool, country: str | None, output_dir: Path):
        self.enabled = enabled
        self.output_dir = output_dir
        self.result = Emissions(country=resolve_country(country) if enabled else None)
        self._holder: dict = {}
        self._finished = False
        self._thread: threading.Thread | None = None
        self._missing = False

    def begin(self) -> None:
        """Start measuring now, in a background thread; later calls do nothing."""
        if self.enabled and self._thread is None and not self._missing:
            if not available("codecarbon"):
                self._missing = True
                return
            self._thread = threading.Thread(target=self._start, name="emissions", daemon=True)
            self._thread.start()

    def _start(self) -> None:
        try:
            _quiet()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from codecarbon import OfflineEmissionsTracker

                _quiet()
                self.output_dir.mkdir(parents=True, exist_ok=True)
                tracker = OfflineEmissionsTracker(
                    country_iso_code=self.result.country,
                    output_dir=str(self.output_dir),
                    save_to_file=False,
                    log_level="critical",
                    tracking_mode="process",
                    allow_multiple_runs=True,
                    measure_power_secs=15,
                )
                tracker.start()
            self._holder["tracker"] = tracker
        except ImportError as err:  # codecarbon there but broken (one of its own packages missing)
            self._holder["error"] = f"codecarbon could not be imported ({err})"
        except Exception as err:  # noqa: BLE001 - emissions must never fail the command
            self._holder["error"] = err

    def finish(self) -> Emissions:
        """Stop measuring and fill `result`; never raises. Later calls return the same figures."""
        if self._finished:
            return self.result
        self._finished = True
        if not self.enabled:
            self.result.note = "emissions tracking off"
        elif self._missing:
            self.result.note = MISSING_NOTE
        elif self._thread is None:
            self.result.energy_kwh, self.result.co2_kg = 0.0, 0.0
            self.result.note = "nothing was computed, so nothing was measured"
        else:
            self._thread.join(timeout=30)
            _finish(self._holder, self.result)
        return self.result


@contextlib.contextmanager
def track_emissions(
    enabled: bool, country: str | None, output_dir: Path, lazy: bool = False
) -> Iterator[EmissionsTracker]:
    """Measure the energy (kWh) and CO2 (kg) of the `with` block into `tracker.result`; with `lazy`
    only from `tracker.begin()` on (a cached step pays nothing). A codecarbon failure leaves
    the figures None with a `note`; the block's own exceptions pass through."""
    tracker = EmissionsTracker(enabled, country, output_dir)
    if not lazy:
        tracker.begin()
    try:
        yield tracker
    finally:
        tracker.finish()


def _finish(holder: dict, result: Emissions) -> None:
    tracker = holder.get("tracker")
    if tracker is None:
        err = holder.get("error", "tracker did not start in time")
        result.note = f"emissions not measured: {err}"
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            co2 = tracker.stop()
        data = tracker.final_emissions_data
        result.energy_kwh = float(data.energy_consumed)
        result.co2_kg = float(co2 if co2 is not None else data.emissions)
        modes = {getattr(h, "_mode", None) for h in getattr(tracker, "_hardware", [])}
        result.estimated = not (modes & _MEASURED_MODES)
        if result.estimated:
            result.note = "estimate: no power counters here, codecarbon used CPU load x TDP"
    except Exception as err:  # noqa: BLE001 - emissions must never fail the command
        result.note = f"emissions not measured: {err}"
