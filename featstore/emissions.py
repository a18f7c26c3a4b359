"""Energy and CO2 of a step, from codecarbon's offline tracker; never makes a step fail.

Wraps any computing step; imports no other featstore module but `layout`-free helpers.
codecarbon is imported only when tracking is on. Its hardware probe takes about a second, so
the tracker starts in a background thread while the step already runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

#: Country used when neither --country nor $FEATSTORE_COUNTRY says (ISO 3166 alpha-3).
DEFAULT_COUNTRY = "USA"
_MEASURED_MODES = {"intel_rapl", "apple_powermetrics", "intel_power_gadget"}


@dataclass
class Emissions:
    """What codecarbon measured for one step. Figures are None when tracking was off or failed."""

    energy_kwh: float | None = None
    co2_kg: float | None = None
    country: str | None = None
    estimated: bool | None = None
    note: str | None = None

    def to_dict(self) -> dict:
        """Return a JSON-ready dict."""
        return asdict(self)


def resolve_country(country: str | None) -> str:
    """Return `country`, else $FEATSTORE_COUNTRY, else DEFAULT_COUNTRY, upper-cased."""
    return (country or os.environ.get("FEATSTORE_COUNTRY") or DEFAULT_COUNTRY).upper()


def _quiet() -> None:
    os.environ.setdefault("CODECARBON_LOG_LEVEL", "critical")
    logging.getLogger("codecarbon").setLevel(logging.CRITICAL)
    logging.getLogger("codecarbon").propagate = False


@contextlib.contextmanager
def track_emissions(enabled: bool, country: str | None, output_dir: Path) -> Iterator[Emissions]:
    """Measure the energy (kWh) and CO2 (kg) of the `with` block into the yielded Emissions.

    Any failure of codecarbon leaves the figures None with `note` saying why; the block's
    own exceptions pass through untouched.
    """
    result = Emissions(country=resolve_country(country) if enabled else None)
    if not enabled:
        result.note = "emissions tracking off"
        yield result
        return
    holder: dict = {}

    def start() -> None:
        try:
            _quiet()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from codecarbon import OfflineEmissionsTracker

                _quiet()
                output_dir.mkdir(parents=True, exist_ok=True)
                tracker = OfflineEmissionsTracker(
                    country_iso_code=result.country,
                    output_dir=str(output_dir),
                    save_to_file=False,
                    log_level="critical",
                    tracking_mode="process",
                    allow_multiple_runs=True,
                    measure_power_secs=15,
                )
                tracker.start()
            holder["tracker"] = tracker
        except Exception as err:  # noqa: BLE001 - emissions must never fail the command
            holder["error"] = err

    thread = threading.Thread(target=start, name="emissions", daemon=True)
    thread.start()
    try:
        yield result
    finally:
        thread.join(timeout=30)
        _finish(holder, result)


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
