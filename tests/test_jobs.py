"""The job wrapper and the typed run log: one record per successful run, none for a failed one."""

from __future__ import annotations

import json

import pytest

from featstore.errors import StoreLockedError
from featstore.files import file_lock
from featstore.jobs import run_job
from featstore.options import JobOptions
from featstore.store.layout import resolve_store
from featstore.store.runlog import (
    EvaluateRecord,
    ExtractRecord,
    RunRecord,
    ScoreRecord,
    read_records,
    record_run,
)


def test_a_job_records_its_run_with_seconds_and_energy(store):
    options = JobOptions(store=str(store), emissions=False)
    with run_job("extract", options, lock=store / "x.lock") as job:
        job.record = ExtractRecord(job.run_id, "extract", dataset="photos", feature_set="photos@tiny")
        job.record.counts["n_computed"] = 3
    [record], notes = read_records(resolve_store(store))
    assert notes == [] and isinstance(record, ExtractRecord) and record.id == job.run_id
    assert record.feature_set == "photos@tiny" and record.computed() and record.seconds >= 0
    assert record.emissions["note"] == "emissions tracking off" and record.energy_kwh is None
    assert record.time and record.featstore_version


def test_a_failed_job_records_nothing_and_a_held_lock_is_refused(store):
    options = JobOptions(store=str(store), emissions=False)
    with pytest.raises(RuntimeError), run_job("score", options) as job:
        job.record = ScoreRecord(job.run_id, "score")
        raise RuntimeError("boom")
    assert read_records(resolve_store(store)) == ([], [])
    with file_lock(store / "job.lock", "the job"):
        with pytest.raises(StoreLockedError, match="the job is being written by another featstore process"):
            with run_job("score", options, lock=store / "job.lock", lock_what="the job"):
                pass


def test_records_read_lines_of_other_versions(store):
    layout = resolve_store(store)
    record_run(layout, {"id": "e1", "command": "evaluate", "head_id": "h", "future_key": 1, "metrics": {}})
    record_run(layout, {"id": "x1", "command": "something-new"})
    layout.runs.open("a").write('{"id": "cut"')
    layout.runs.open("a").write('\n{"no": "id"}\n')
    records, notes = read_records(layout)
    assert [type(r) for r in records] == [EvaluateRecord, RunRecord]
    assert records[0].head_id == "h" and records[0].extra == {"future_key": 1}
    assert records[0].to_dict()["future_key"] == 1
    assert len(notes) == 2 and "could not be read" in notes[0] and "record 3 is not a run" in notes[1]
    assert json.loads(layout.runs.read_text().splitlines()[0])["id"] == "e1"
