"""The job wrapper of every computing command: store, run id, lock, energy and CO2, reporter, wall
seconds, and the run record appended to `store/runs.jsonl` when the work succeeds."""

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
    """One running command: `layout`, `run_id`, `reporter`, `begin()` (start measuring, lazy jobs)
    and `record`, appended when the block ends without an exception (None: nothing logged).
    `energy_known` False records no energy; `note` goes into the emissions' note. After the
    block, `seconds` and `emissions` hold the figures."""

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
        """Stop measuring energy now and return the figures the job records."""
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
    """Run the `with` block as one `command` of the store in `options`, yielding the `Job`.

    `run_id` defaults to `<command>-<time>-<4 hex>`. With `lock`, `files.file_lock(lock)` is
    held over the block (`lock_what` and `lock_hint` word its refusal; `wait` waits instead).
    With `lazy`, energy is measured only from `job.begin()`. `job.record`, set in the block,
    is completed (run id, seconds, energy, CO2) and appended unless the block raised.
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
