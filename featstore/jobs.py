"""The one job wrapper every computing command runs in: the store, a run id, an optional lock,
energy and CO2, the reporter, wall seconds, and the typed run record appended to
`store/runs.jsonl` when the work succeeds (never when it raised).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from featstore.emissions import Emissions, EmissionsTracker, track_emissions
from featstore.files import file_lock
from featstore.options import JobOptions
from featstore.reporter import SILENT, Reporter
from featstore.store.layout import StoreLayout, resolve_store
from featstore.store.runlog import RunRecord, new_run_id, record_run


@dataclass
class Job:
    """One running command: `layout`, `run_id`, `reporter`, `begin()` to start measuring energy when real work starts (lazy jobs), and `record`, the
    run record to append when the block ends without an exception (None: nothing logged).
    `energy_known` False records no energy or CO2 (e.g. a resumed run measured only in part);
    `note` is added to the recorded emissions' note (e.g. why the energy is unknown).
    After the block, `seconds` and `emissions` hold the wall time and energy figures."""

    command: str
    layout: StoreLayout
    run_id: str
    reporter: Reporter = SILENT
    record: RunRecord | None = None
    energy_known: bool = True
    note: str | None = None
    seconds: float | None = None
    emissions: Emissions = field(default_factory=Emissions)
    tracker: EmissionsTracker | None = field(default=None, repr=False)
    _stopped: bool = field(default=False, repr=False)

    def begin(self) -> None:
        """Start measuring energy now (the first real work of a lazy job); later calls do nothing."""
        if self.tracker is not None:
            self.tracker.begin()

    def stop_measuring(self) -> Emissions:
        """Stop measuring energy now and return the figures (what follows in the block, e.g.
        writing reports, is not counted); the job records these."""
        if self.tracker is None:
            return self.emissions
        if not self._stopped:
            self.emissions = self.tracker.finish()
            self._stopped = True
        return self.emissions


@contextlib.contextmanager
def run_job(
    command: str,
    options: JobOptions | None = None,
    *,
    run_id: str | None = None,
    lock: Path | None = None,
    lock_what: str | None = None,
    lock_hint: str | None = None,
    wait: bool = False,
    lazy: bool = False,
    reporter: Reporter = SILENT,
) -> Iterator[Job]:
    """Run the `with` block as one `command` of the store in `options`.

    Parameters
    ----------
    command
        The run log's command name (extract, fit-head, evaluate, finetune, score).
    options
        Store, emissions and country (`JobOptions()`: the default store, measured, default country).
    run_id
        The run's id; default `<command>-<time>-<4 hex>`.
    lock, lock_what, lock_hint, wait
        Hold `files.file_lock(lock)` over the block (`lock_what` names what is written and
        `lock_hint` what to do, in the message of `StoreLockedError`); with `wait`, wait for
        another holder instead.
    lazy
        Start measuring energy only when the block calls `job.begin()`.
    reporter
        What the block reports through (`job.reporter`).

    Yields
    ------
    Job
        Set `job.record` in the block: it is completed with the run id, seconds, energy and
        CO2 and appended to the run log after the block (not when the block raised).
    """
    options = options or JobOptions()
    layout = resolve_store(options.store)
    job = Job(command, layout, run_id or new_run_id(command), reporter)
    t0 = time.perf_counter()
    with track_emissions(options.emissions, options.country, layout.emissions, lazy=lazy) as tracker:
        job.tracker = tracker
        hint = {"hint": lock_hint} if lock_hint else {}
        held = (
            file_lock(lock, lock_what or lock.stem, wait=wait, **hint) if lock else contextlib.nullcontext()
        )
        with held:
            yield job
    job.seconds = round(time.perf_counter() - t0, 3)
    job.emissions = tracker.result
    if job.record is not None:
        em = job.emissions
        job.record = replace(
            job.record,
            id=job.run_id,
            command=command,
            seconds=job.record.seconds if job.record.seconds is not None else job.seconds,
            energy_kwh=em.energy_kwh if job.energy_known else None,
            co2_kg=em.co2_kg if job.energy_known else None,
            emissions={**em.to_dict(), **({"note": job.note} if job.note else {})},
        )
        record_run(layout, job.record)
