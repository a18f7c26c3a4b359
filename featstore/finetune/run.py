"""`featstore finetune`: the checks, the claim on the run's name, the job and one training session.
TensorFlow is imported only once the input has been checked."""

from __future__ import annotations

import contextlib

from featstore.errors import StoreError, StoreLockedError
from featstore.files import claim
from featstore.finetune.options import FinetuneConfig, FinetuneOptions
from featstore.finetune.prepare import RunPlan, exists_message, plan_run
from featstore.finetune.results import FinetuneResult, finish, run_record
from featstore.finetune.session import Session
from featstore.jobs import run_job
from featstore.options import JobOptions
from featstore.reporter import SILENT, Reporter
from featstore.store.layout import resolve_store

__all__ = ["FinetuneConfig", "FinetuneOptions", "FinetuneResult", "finetune"]


def finetune(
    data: str | None = None,
    backbone: str | None = None,
    *,
    options: FinetuneOptions = FinetuneOptions(),
    job: JobOptions = JobOptions(),
    name: str | None = None,
    resume: str | None = None,
    reporter: Reporter = SILENT,
) -> FinetuneResult:
    """Train a network end to end on the labelled images of `data` and save the run in the store.

    Parameters
    ----------
    data
        A folder of class folders (or train/val/test folders) or a CSV manifest.
    backbone
        A registry name (ImageNet weights: fine-tuning; `weights="none"`: from scratch), a
        .keras file, `simple-cnn` or `lenet`, or `finetune:<run-id>` (tuned again).
    options
        Network, training, split (that of `fit_head`), decoding and device.
    job, name
        Store and energy; the run id (default `<dataset>-<backbone>-<time>-<4 hex>`).
    resume
        An unfinished run's id: continue from its last checkpoint with its own options (only
        the device and decode threads of `options` apply).
    reporter
        Gets `progress(done, total, stage)` (decode, train, download) and a line per note.

    Returns
    -------
    FinetuneResult
        Metrics per part, epochs, parameters, GFLOPs per image, seconds, images/s, energy.

    Raises
    ------
    InvalidOptionError, DatasetError, UnknownBackboneError, WeightsError, StoreError, DeviceError
        Bad input, found before any long work; a taken run name (also when two runs of one
        name start together).
    """
    options = options.check()
    layout = resolve_store(job.store)
    plan = plan_run(layout, data, backbone, options, name=name, resume=resume, reporter=reporter)
    try:
        with _claim(plan), _job(plan, job, reporter) as running:
            outcome = Session(plan, running).run()
            running.record = run_record(outcome)
            running.energy_known = outcome.state.sessions == 1
    except StoreLockedError as err:
        raise StoreError(
            f"fine-tune run {plan.run_id} is being trained by another featstore process ({err})"
        ) from None
    return finish(outcome, running.emissions)


def _claim(plan: RunPlan):
    """A new run claims its folder's name until it ends (a second run of that name fails at once)."""
    if plan.resuming:
        return contextlib.nullcontext()
    return claim(plan.folder, StoreError, exists_message(plan.run_id))


def _job(plan: RunPlan, options: JobOptions, reporter: Reporter):
    """The run's job: its id, the lock every session of the run holds, energy from the decoding on."""
    return run_job(
        "finetune",
        options,
        run_id=plan.run_id,
        lock=plan.layout.finetune / f"{plan.run_id}.lock",
        lock_what=plan.run_id,
        lazy=True,
        reporter=reporter,
    )
