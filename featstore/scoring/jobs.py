"""`featstore score`: a head or a fine-tune run applied to new images, a predictions table out.

The job holds its folder's lock; features already in the store are reused, each computed batch
goes to a part file (a killed job recomputes at most one batch), and the table is renamed onto
the output only when complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from featstore.data.options import DecodeOptions
from featstore.data.scan import Skipped
from featstore.emissions import Emissions
from featstore.errors import (
    DatasetError,
    FeatstoreError,
    InvalidOptionError,
    OutputExistsError,
    StoreLockedError,
)
from featstore.files import file_lock
from featstore.heads.thresholds import UNKNOWN, Threshold, held_out, threshold_for_precision
from featstore.inference.options import InferenceOptions
from featstore.jobs import run_job
from featstore.options import JobOptions
from featstore.reporter import SILENT, Reporter
from featstore.scoring.inputs import list_inputs
from featstore.scoring.options import ScoreOptions
from featstore.scoring.predictor import Predictor, load_predictor
from featstore.scoring.stage_outputs import Row, StageOutputs, compute_outputs
from featstore.scoring.tables import FORMATS, PredictionBatch, PredictionWriter, check_output, refuse_existing
from featstore.store.featuresets import remove_stale_temporaries
from featstore.store.layout import StoreLayout, resolve_store
from featstore.store.runlog import ScoreRecord

__all__ = ["ScoreOptions", "ScoreResult", "job_dir", "list_inputs", "score"]

#: Rows gathered, scored and written at a time.
WRITE_ROWS = 4096
#: The counts a `ScoreResult` and its run record carry.
COUNTS = ("n_images", "n_scored", "n_errors", "n_cached", "n_resumed", "n_computed", "n_skipped", "n_unknown")


@dataclass
class ScoreResult:
    """What one `score` job did; `errors` are the error rows, `skipped` the entries left out."""

    model: str
    kind: str
    input: str
    output: str
    format: str
    top_k: int
    class_names: list[str]
    n_images: int
    n_scored: int
    n_errors: int
    n_cached: int
    n_resumed: int
    n_computed: int
    n_skipped: int
    engine: str
    device: str | None
    seconds: float
    images_per_s: float | None
    run_id: str
    errors: list[Skipped] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    emissions: Emissions = field(default_factory=Emissions)
    n_unknown: int = 0
    threshold: Threshold | None = None

    def to_dict(self) -> dict:
        """Return a JSON-ready dict."""
        d = asdict(self)
        d["errors"] = [s.to_dict() for s in self.errors]
        d["skipped"] = [s.to_dict() for s in self.skipped]
        return d


def job_dir(layout: StoreLayout, predictor: Predictor, output: Path) -> Path:
    """Folder of the parts of the job scoring with `predictor` into `output`."""
    key = hashlib.sha256(f"{predictor.identity}\n{output}".encode()).hexdigest()[:16]
    return layout.root / "scores" / key


@contextlib.contextmanager
def claim_output(out: Path, overwrite: bool) -> Iterator[None]:
    """Hold the name `out` for one job (the lock `.<name>.lock` beside it) from before the first
    image is read until after the rename; OutputExistsError when another job holds it, or the
    output exists and `overwrite` is False (checked again before the rename)."""
    lock = out.parent / f".{out.name}.lock"
    held = contextlib.ExitStack()
    try:
        held.enter_context(file_lock(lock, out.name))
    except StoreLockedError:
        raise OutputExistsError(
            f"output {out} is being written by another featstore job; wait for it to finish"
        ) from None
    except OSError as err:
        raise FeatstoreError(f"cannot write to the output folder {out.parent}: {err.strerror}") from err
    with held:
        try:
            refuse_existing(out, overwrite)
            yield
        finally:
            lock.unlink(missing_ok=True)


@contextlib.contextmanager
def job_lock(folder: Path, out: Path) -> Iterator[None]:
    """Hold `job.lock` of job folder `folder` (a flock); StoreLockedError when another process runs
    the same job."""
    held = contextlib.ExitStack()
    try:
        held.enter_context(file_lock(folder / "job.lock", f"score job {folder.name}"))
    except StoreLockedError:
        raise StoreLockedError(
            f"another featstore score job is writing {out} with the same model; wait for it to finish"
        ) from None
    with held:
        yield


def score(
    options: ScoreOptions,
    *,
    inference: InferenceOptions = InferenceOptions(),
    decode: DecodeOptions = DecodeOptions(),
    job: JobOptions = JobOptions(),
    reporter: Reporter = SILENT,
) -> ScoreResult:
    """Score every image of `options.input` with a head or a fine-tune run into a predictions
    table `options.output` (.parquet, .csv or .jsonl).

    Parameters
    ----------
    options
        The input, the output, the model (`head` or `model`), `top_k`, `overwrite`, `force`.
    inference, decode
        Device, batch size, threads, runtime, engine; decoder and decode threads (with ray,
        the number of actors). Images are resized as the head's features were.
    job, reporter
        Store, energy, country; `progress(done, total)` per image and a line per note.

    Returns
    -------
    ScoreResult
        Counts (rows, scored, error rows, cached / resumed / computed), seconds, images/s.

    Raises
    ------
    InvalidOptionError
        A bad option value.
    UnknownHeadError, UnknownRunError, StoreError
        No such head or run; a backbone ONNX file it needs is missing.
    OutputExistsError, FeatstoreError
        The output exists (without `overwrite`), another job writes it, a wrong extension.
    StoreLockedError
        Another process runs the same job.
    DatasetError
        The input is missing or empty, or no image could be read (nothing written).
    """
    options, inference, decode = options.check(), inference.check(), decode.check()
    layout = resolve_store(job.store)
    predictor = load_predictor(layout, head=options.head, model=options.model)
    out = check_output(options.output, options.overwrite, tuple(FORMATS))
    threshold = _threshold(layout, options, predictor)
    if threshold is not None:
        reporter.log(threshold.describe())
    items, skipped = list_inputs(options.input)
    folder = job_dir(layout, predictor, out)
    with (
        claim_output(out, options.overwrite),
        run_job("score", job, lazy=True, reporter=reporter) as running,
        job_lock(folder, out),
    ):
        outputs = StageOutputs(layout, predictor, inference, folder, reporter)
        outputs.on_compute = running.begin
        try:
            result = _run(outputs, items, out, options, decode, threshold)
        finally:
            outputs.close()
            if not any(folder.glob("*.parts/part-*.h5")):  # done, or nothing to resume
                shutil.rmtree(folder, ignore_errors=True)
        result.update(input=os.fspath(options.input), skipped=skipped, n_skipped=len(skipped))
        running.record = _record(predictor, result)
    shutil.rmtree(folder, ignore_errors=True)
    return ScoreResult(**result, run_id=running.run_id, seconds=running.seconds, emissions=running.emissions)


def _threshold(layout: StoreLayout, options: ScoreOptions, predictor: Predictor) -> Threshold | None:
    """The rejection threshold asked for (chosen on the head's held-out images for a target
    precision); InvalidOptionError when a class is already called `unknown`."""
    if options.reject_below is None and options.target_precision is None:
        return None
    if UNKNOWN in predictor.class_names:
        raise InvalidOptionError(
            "reject_below",
            f"the head has a class named {UNKNOWN!r}, so rejected rows could not be told apart",
        )
    if options.reject_below is not None:
        return Threshold(float(options.reject_below))
    proba, y, source = held_out(layout, options.head, predictor.estimator, predictor.meta)
    value, precision, coverage = threshold_for_precision(proba, y, options.target_precision)
    return Threshold(value, options.target_precision, precision, coverage, len(y), source)


def _run(
    outputs: StageOutputs, items, out: Path, options: ScoreOptions, decode: DecodeOptions, threshold=None
) -> dict:
    """Compute what is missing, write the table; return the fields of the ScoreResult known here."""
    remove_stale_temporaries(out.parent, out.name)
    outputs.open_sources(options.force)
    rows, loop_s = compute_outputs(outputs, items, decode)
    errors = [Skipped(path, err) for path, _, err in rows if err]
    n_scored = len(rows) - len(errors)
    if n_scored == 0:
        reasons = "; ".join(f"{s.path}: {s.reason}" for s in errors[:3])
        raise DatasetError(f"none of the {len(rows)} images could be read ({reasons}); nothing was written")
    origins = Counter(outputs.origin(d) for _, d, err in rows if not err)
    fmt, k, n_unknown = _write_table(outputs, rows, out, options, threshold)
    p = outputs.predictor
    return {
        "model": p.name,
        "kind": p.kind,
        "output": str(out),
        "format": fmt,
        "top_k": k,
        "class_names": p.class_names,
        "n_images": len(rows),
        "n_scored": n_scored,
        "n_errors": len(errors),
        "n_cached": origins["cached"],
        "n_resumed": origins["resumed"],
        "n_computed": origins["computed"],
        "engine": outputs.inference.engine,
        "device": outputs.device_used,
        "images_per_s": round(len(rows) / loop_s, 2) if loop_s > 0 else None,
        "errors": errors,
        "n_unknown": n_unknown,
        "threshold": threshold,
    }


def _write_table(
    outputs: StageOutputs, rows: list[Row], out: Path, options: ScoreOptions, threshold: Threshold | None
) -> tuple[str, int, int]:
    """Write the table to a temporary file renamed onto `out`; return its format, top-k width and
    the rows that say `unknown`."""
    below = None if threshold is None else threshold.value
    with PredictionWriter(out, outputs.predictor.class_names, options.top_k, below) as writer:
        for start in range(0, len(rows), WRITE_ROWS):
            chunk = rows[start : start + WRITE_ROWS]
            paths, digests, errors = (list(column) for column in zip(*chunk, strict=True))
            writer.write(PredictionBatch(paths, digests, errors, outputs.proba(chunk)))
        writer.commit(replace=options.overwrite)
    return writer.format, writer.k, writer.n_unknown


def _record(predictor: Predictor, result: dict) -> ScoreRecord:
    """The run log's line for the job (`run_job` adds id, seconds, energy and CO2)."""
    same = ("model", "kind", "input", "output", "engine", "device", "images_per_s")
    threshold = result.get("threshold")
    return ScoreRecord(
        "", "score", backbone_digests=[s.digest for s in predictor.stages],
        counts={k: result[k] for k in COUNTS}, **{k: result[k] for k in same},
        threshold=None if threshold is None else asdict(threshold),
    )  # fmt: skip
