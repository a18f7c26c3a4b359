"""`featstore finetune`: end-to-end training in TensorFlow, and the from-scratch baselines.

`finetune()` takes a run from options to `store/finetune/<run-id>/` (see
`featstore.store.run_files` for the folder contract): the checks before any long work
(`finetune.prepare`), the claim on the run's name and the job (`featstore.jobs.run_job`: lock,
energy and CO2, the `FinetuneRecord` in the run log), one training session
(`finetune.session`), and the result (`finetune.results`). TensorFlow is imported only once
the input has been checked.

Imports `jobs`, `files` (the name claim), `errors`, `store.layout` and the `finetune` modules
`options`, `prepare`, `session`, `results` and `training` (the progress type).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from featstore.errors import InvalidOptionError, StoreError, StoreLockedError
from featstore.files import claim
from featstore.finetune.options import FinetuneConfig, FinetuneOptions
from featstore.finetune.prepare import RunPlan, exists_message, plan_run
from featstore.finetune.results import FinetuneResult, finish, run_record
from featstore.finetune.session import Session
from featstore.finetune.training import StageProgress
from featstore.jobs import JobOptions, run_job
from featstore.options import merge_options
from featstore.store.layout import resolve_store

__all__ = ["FinetuneConfig", "FinetuneOptions", "FinetuneResult", "finetune"]

_JOB_KEYS = ("store", "emissions", "country")


def _silent(_msg: str) -> None:
    return None


def _split_kwargs(
    options: FinetuneOptions | None, job: JobOptions | None, kwargs: dict[str, Any]
) -> tuple[FinetuneOptions, JobOptions]:
    """Options objects from `options`/`job` and flat keywords, by the rule every command shares
    (`featstore.options.merge_options`): a keyword may not set a field of an object also given."""
    job_kwargs = {k: kwargs.pop(k) for k in _JOB_KEYS if k in kwargs}
    if kwargs and options is not None:
        raise InvalidOptionError(
            next(iter(kwargs)), "given both as a keyword and in the FinetuneOptions object"
        )
    options = options.check() if options is not None else FinetuneOptions.from_kwargs(kwargs)
    [job] = merge_options({JobOptions: job}, job_kwargs)
    return options, job


def finetune(
    data: str | None = None,
    backbone: str | None = None,
    *,
    options: FinetuneOptions | None = None,
    job: JobOptions | None = None,
    name: str | None = None,
    resume: str | None = None,
    progress: StageProgress | None = None,
    log: Callable[[str], None] | None = None,
    **kwargs: Any,
) -> FinetuneResult:
    """Train a network end to end on the labelled images of `data` and save the run in the store.

    Parameters
    ----------
    data
        A folder of class folders (or train/val/test folders) or a CSV manifest, as for `extract`.
    backbone
        A registry name (ImageNet weights by default: fine-tuning; `weights="none"`: from
        scratch), a .keras file, `simple-cnn` or `lenet` (from scratch), or `finetune:<run-id>`
        (an earlier run's network, fine-tuned again).
    options
        The network, training, split, decoding and device (`FinetuneOptions`; default: every
        default). The split is that of `fit_head`: with stored train and val parts and no test
        part, val is the held-out test set and validation is carved from train; `log` gets
        that note. Instead of `options`, its fields may be given as flat keywords
        (`epochs=5, augment="flip,rotate", test_size=0.3, device="cpu"`).
    job
        Store, energy measurement and country (`JobOptions`); or flat `store`, `emissions`,
        `country` keywords.
    name
        The run id (default `<dataset>-<backbone label>-<time>-<4 hex>`).
    resume
        Id of an unfinished run: continue from its last checkpoint with its own options (only
        the device and the decode threads of `options` apply).
    progress, log
        `progress(done, total, stage)` (stages decode, train; download for ImageNet weights)
        and `log(line)` for notes.

    Returns
    -------
    FinetuneResult
        Metrics per split, epochs, parameters, GFLOPs per image, seconds, images/s, energy.

    Raises
    ------
    InvalidOptionError, DatasetError, UnknownBackboneError, WeightsNotFoundError, StoreError, DeviceError
        Bad input, found before any long work where it can be known in advance; a run name
        that is taken (also when two runs of one name start together).

    Examples
    --------
    >>> r = finetune("photos/", "simple-cnn", input_size=64, epochs=5, emissions=False)  # doctest: +SKIP
    >>> r.metrics["test"]["accuracy"]  # doctest: +SKIP
    """
    options, job_options = _split_kwargs(options, job, kwargs)
    log = log or _silent
    layout = resolve_store(job_options.store)
    plan = plan_run(layout, data, backbone, options, name=name, resume=resume, progress=progress, log=log)
    try:
        with _claim(plan), _job(plan, job_options, progress, log) as running:
            outcome = Session(plan, running).run()
            running.record = run_record(outcome)
            running.energy_known = outcome.state.sessions == 1
    except StoreLockedError as err:
        raise StoreError(
            f"fine-tune run {plan.run_id} is being trained by another featstore process ({err})"
        ) from None
    return finish(outcome, running.emissions)


def _claim(plan: RunPlan):
    """A new run claims its folder's name until it ends: a second run of that name fails with
    the one-line `exists already`, whenever it starts."""
    if plan.resuming:
        return contextlib.nullcontext()
    return claim(plan.folder, StoreError, exists_message(plan.run_id))


def _job(plan: RunPlan, options: JobOptions, progress, log):
    """The run's job: its id, the lock every session of the run holds, energy from the decoding on."""
    return run_job(
        "finetune",
        options,
        run_id=plan.run_id,
        lock=plan.layout.finetune / f"{plan.run_id}.lock",
        lock_what=plan.run_id,
        lazy=True,
        progress=progress,
        log=log,
    )
