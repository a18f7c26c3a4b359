"""`featstore score`: a head (or a fine-tune run) applied to new images, a predictions table out.

Owns the batch job: listing the inputs (a folder, a CSV or text list of paths, a glob, or one
image), finding features already in the store, computing the rest in batches, and writing the
table (`predictions`). Images whose content digest has a row in a feature set of the head's
backbone export (same digest, same resize, float32) reuse that row; the backbone runs only on
the others. Each computed batch goes to its own part file under `store/scores/<job>/`, so a job
killed at any moment and run again with the same arguments recomputes at most one batch; the
table is written to a temporary name and renamed when complete, then the parts are deleted.
Imports `predictor`, `predictions`, `images`, `store`, `runtime`, `emissions`, `runs`; Ray
only with `engine="ray"`; TensorFlow only for a dense head.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from featstore.data.images import IMAGE_EXTENSIONS, ImageItem, LoadedImage, Skipped, load_images, walk_images
from featstore.emissions import Emissions, track_emissions
from featstore.errors import DatasetError, StoreError, StoreLockedError
from featstore.runtime import default_threads
from featstore.scoring.predictor import Predictor, load_predictor
from featstore.scoring.tables import FORMATS, PredictionBatch, PredictionWriter, check_output
from featstore.store.featuresets import (
    FeatureSetReader,
    FeatureSource,
    PartWriter,
    clear_parts,
    feature_set_lock,
    read_parts,
    remove_stale_temporaries,
)
from featstore.store.layout import StoreLayout, resolve_store
from featstore.store.runlog import new_run_id, record_run

#: progress(n_done, n_total): called after every image read.
Progress = Callable[[int, int], None]
#: Rows gathered, scored and written at a time.
WRITE_ROWS = 4096


@dataclass
class ScoreResult:
    """What one `score` job did. `errors` lists the files that are error rows in the table;
    `skipped` the entries left out of it (duplicates, symlink loops)."""

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

    def to_dict(self) -> dict:
        """Return a JSON-ready dict."""
        d = asdict(self)
        d["errors"] = [s.to_dict() for s in self.errors]
        d["skipped"] = [s.to_dict() for s in self.skipped]
        return d


# ---------------------------------------------------------------- inputs


def _list_file(path: Path) -> list[str]:
    """Entries of a CSV with a `path` column, or of a text file with one path per line."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"cannot read the list of paths {path}: {err}") from err
    if path.suffix.lower() != ".csv":
        return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    try:
        rows = list(csv.reader(text.splitlines()))
    except csv.Error as err:
        raise DatasetError(f"cannot read CSV {path}: {err}") from err
    header = [h.strip().lower() for h in rows[0]] if rows else []
    if "path" not in header:
        raise DatasetError(
            f"CSV {path} must start with a header row naming a `path` column; "
            f"found {','.join(rows[0]) if rows else '(empty file)'}"
        )
    col = header.index("path")
    return [row[col].strip() for row in rows[1:] if len(row) > col and row[col].strip()]


def list_inputs(input: str | os.PathLike) -> tuple[list[ImageItem], list[Skipped]]:
    """Return the images to score, in table order, and the entries left out.

    `input` is a folder (every image below it, sorted by path), a `.csv` with a `path` column or a
    `.txt` with one path per line (list order; relative paths are relative to the list's
    folder; a missing file stays as a row and becomes an error row), a glob pattern such as
    `photos/**/*.jpg`, or one image file. An item's `rel` is the path shown in the table.

    Raises
    ------
    DatasetError
        The input does not exist, matches nothing, or holds no image.
    """
    text = os.fspath(input)
    path = Path(text).expanduser()
    skipped: list[Skipped] = []
    if path.is_dir():
        n = len(str(path)) + 1
        rels = sorted((str(f)[n:], f) for f in walk_images(path, skipped))
        entries = [(os.path.join(text, rel), f) for rel, f in rels]
    elif path.is_file() and path.suffix.lower() in (".csv", ".txt"):
        base = path.parent
        entries = []
        for raw in _list_file(path):
            p = Path(raw).expanduser()
            entries.append((raw, p if p.is_absolute() else base / p))
    elif path.is_file():
        entries = [(text, path)]
    elif glob.has_magic(text):
        matches = sorted(glob.glob(os.path.expanduser(text), recursive=True))
        entries = [(m, Path(m)) for m in matches if os.path.isfile(m)]
        if not entries:
            raise DatasetError(f"no file matches the pattern {text}")
    else:
        raise DatasetError(
            f"input {path} does not exist (give a folder, a .csv or .txt list, a glob or an image)"
        )
    items, seen = [], {}
    for n, (shown, file) in enumerate(entries, start=1):
        key = os.path.normpath(os.path.abspath(file))
        if key in seen:
            skipped.append(Skipped(shown, f"entry {n}: duplicate of entry {seen[key]}"))
            continue
        seen[key] = n
        items.append(ImageItem(Path(key), shown, -1))
    if not items:
        where = "" if path.is_dir() else " (the list is empty)"
        raise DatasetError(
            f"no images found in {text}{where}; looked for {', '.join(sorted(IMAGE_EXTENSIONS))}"
        )
    return items, skipped


# ---------------------------------------------------------------- the job


def job_dir(layout: StoreLayout, predictor: Predictor, output: Path) -> Path:
    """Folder of the parts of the job scoring with `predictor` into `output`."""
    key = hashlib.sha256(f"{predictor.identity}\n{output}".encode()).hexdigest()[:16]
    return layout.root / "scores" / key


def seed_from_feature_sets(
    layout: StoreLayout, predictor: Predictor, sources: list[FeatureSource]
) -> list[int]:
    """Add the rows of every feature set holding a stage's outputs to that stage's source.

    Rows count when the set's backbone digest, resize and dtype (float32) match the stage's
    cache tag. Returns how many feature sets each stage got; damaged files are passed over.
    """
    counts = [0] * len(sources)
    if predictor.kind != "head" or not layout.features.is_dir():
        return counts
    for path in sorted(layout.features.glob("*.h5")):
        try:
            reader = FeatureSetReader(path)
        except (StoreError, OSError):
            continue
        a = reader.attrs
        tag = f"{a.get('backbone_digest')}:{a.get('resize')}:{a.get('dtype')}"
        used = False
        for i, (stage, source) in enumerate(zip(predictor.stages, sources, strict=True)):
            if tag == stage.cache_tag and reader.n_features == stage.n_outputs:
                rows = reader.rows()
                views = rows.view.tolist()
                source.add_reader(
                    reader,
                    [d if v == 0 else f"view{v}:{d}" for d, v in zip(rows.digests, views, strict=True)],
                )
                counts[i] += 1
                used = True
                break
        if not used:
            reader.close()
    return counts


class _Job:
    """One scoring job: its sources of stage outputs, the parts it writes, and the table rows."""

    def __init__(self, layout, predictor: Predictor, folder: Path, batch_size, n_threads, device, log):
        self.layout, self.predictor, self.folder = layout, predictor, folder
        self.batch_size, self.n_threads, self.device = batch_size, n_threads, device
        self.log = log or (lambda msg: None)
        self.sources = [FeatureSource() for _ in predictor.stages]
        self.writers: list[PartWriter | None] = [None] * len(predictor.stages)
        self.n_seed_sources = [0] * len(predictor.stages)
        self.on_compute: Callable[[], None] = lambda: None
        self.run_stage: Callable[[int, list], np.ndarray] | None = None
        self.device_used: str | None = None
        self.computed: set[str] = set()

    def part_folder(self, i: int) -> Path:
        return self.folder / f"stage{i}.parts"

    def open_sources(self, force: bool) -> None:
        """Make the store's feature sets and this job's earlier parts available (none with `force`)."""
        if not force:
            self.n_seed_sources = seed_from_feature_sets(self.layout, self.predictor, self.sources)
            if any(self.n_seed_sources):
                self.log(
                    f"reusing the features of {sum(self.n_seed_sources)} feature set(s) of "
                    f"{' + '.join(s.label for s in self.predictor.stages)} in the store"
                )
        for i, (stage, source) in enumerate(zip(self.predictor.stages, self.sources, strict=True)):
            if force:
                clear_parts(self.part_folder(i))
            read_parts(self.part_folder(i), stage.cache_tag, "float32", source)

    def is_known(self, item: ImageItem, digest: str) -> bool:
        """True when every stage already has outputs for `digest` (run in the decode threads)."""
        return all(digest in s for s in self.sources)

    def known_sets(self) -> list[frozenset]:
        """The digests each stage has outputs for now."""
        return [frozenset(s.digests()) for s in self.sources]

    def _local_stage(self, i: int, pixels: list) -> np.ndarray:
        return self.sessions[i].run(np.stack(pixels))

    def _open_local(self) -> None:
        from featstore.runtime import open_session

        self.sessions = [
            open_session(s.path, self.device, self.n_threads, self.layout.backbones / "trt-cache")
            for s in self.predictor.stages
        ]
        self.device_used = self.sessions[0].device
        self.run_stage = self._local_stage

    def compute(self, batch: list[tuple[str, object]]) -> None:
        """Run every stage that lacks outputs for the batch's digests and store them as parts."""
        if self.run_stage is None:
            self.on_compute()
            self._open_local()
        for i, (stage, source) in enumerate(zip(self.predictor.stages, self.sources, strict=True)):
            todo = [(d, payload) for d, payload in batch if d not in source]
            if not todo:
                continue
            keys = [d for d, _ in todo]
            outputs = self.run_stage(i, [p for _, p in todo])
            bad = ~np.isfinite(outputs).all(axis=1)
            if bad.any():
                raise StoreError(
                    f"{stage.label} returned NaN or infinite values for {int(bad.sum())} images "
                    f"(e.g. digest {keys[int(np.argmax(bad))][:12]}); nothing was stored for them"
                )
            if self.writers[i] is None:
                self.writers[i] = PartWriter(self.part_folder(i), stage.cache_tag, "float32")
            source.add_path(self.writers[i].write(keys, outputs), keys)
            self.computed.update(keys)

    def gather(self, digests: list[str]) -> list[np.ndarray]:
        """Outputs of every stage for `digests`, one (n, n_outputs) float32 array per stage."""
        return [
            s.gather(digests, stage.n_outputs, "float32")
            for stage, s in zip(self.predictor.stages, self.sources, strict=True)
        ]

    def origin(self, digest: str) -> str:
        """Where the outputs of `digest` come from: computed, cached (feature sets) or resumed (parts)."""
        if digest in self.computed:
            return "computed"
        seeded = all(s.source_of(digest) < n for s, n in zip(self.sources, self.n_seed_sources, strict=True))
        return "cached" if seeded else "resumed"

    def close(self) -> None:
        for s in self.sources:
            s.close()


def _local_loaded(job: _Job, items, n_workers: int) -> Iterator[LoadedImage]:
    p = job.predictor
    yield from load_images(
        items,
        size_px=p.input_size,
        resize=p.resize,
        n_workers=n_workers,
        is_known=job.is_known,
        max_ahead=max(2 * job.batch_size, 8 * n_workers),
    )


def _ray_loaded(job: _Job, items, engine) -> Iterator[LoadedImage]:
    job.on_compute()
    models = [s.path.read_bytes() for s in job.predictor.stages]
    job.run_stage = lambda i, payloads: np.stack([pl[i] for pl in payloads]).astype(np.float32)
    p = job.predictor
    widths = [s.n_outputs for s in p.stages]
    for loaded in engine.load(items, p.input_size, p.resize, models, job.known_sets(), widths):
        job.device_used = engine.description
        yield loaded


def score(
    input: str,
    output: str,
    *,
    head: str | None = None,
    model: str | None = None,
    store: str | None = None,
    top_k: int = 3,
    overwrite: bool = False,
    batch_size: int = 32,
    n_workers: int | None = None,
    n_threads: int | None = None,
    device: str = "auto",
    engine: str = "local",
    ray_address: str | None = None,
    force: bool = False,
    emissions: bool = True,
    country: str | None = None,
    progress: Progress | None = None,
    log: Callable[[str], None] | None = None,
) -> ScoreResult:
    """Score every image of `input` with head `head` (or fine-tune run `model`) into table `output`.

    Parameters
    ----------
    input
        A folder, a .csv (with a `path` column) or .txt list of paths, a glob, or an image.
    output
        The table to write: .parquet, .csv or .jsonl (see `featstore.scoring.tables`).
    head, model
        Exactly one: a head id, or `finetune:<run-id>`.
    top_k
        How many of the likeliest classes each row lists (at most the number of classes).
    engine, ray_address
        "local" (decode threads and one ONNX Runtime session here) or "ray" (a Ray cluster:
        the one at `ray_address`, e.g. "auto", or a new local one).
    force
        Recompute every image instead of reusing the store's features and earlier parts.

    Returns
    -------
    ScoreResult
        Counts (rows, scored, error rows, cached / resumed / computed images), seconds, images/s.

    Raises
    ------
    UnknownHeadError, UnknownRunError, StoreError
        No such head or run; a backbone ONNX file it needs is missing.
    OutputExistsError, FeatstoreError
        The output exists (without `overwrite`), has another extension, or cannot be written.
    DatasetError
        The input is missing or empty, or none of its images could be read (nothing written).
    """
    from featstore.inference.ray_engine import check_engine

    if top_k < 1:
        raise DatasetError(f"--top-k must be at least 1, not {top_k}")
    if batch_size < 1:
        raise DatasetError(f"--batch-size must be at least 1, not {batch_size}")
    check_engine(engine, ray_address)
    layout = resolve_store(store)
    predictor = load_predictor(layout, head=head, model=model)
    out = check_output(output, overwrite, tuple(FORMATS))
    items, skipped = list_inputs(input)
    run_id = new_run_id("score")
    folder = job_dir(layout, predictor, out)
    t0 = time.perf_counter()
    with track_emissions(emissions, country, layout.emissions, lazy=True) as tracker:
        try:
            with feature_set_lock(folder / "job.h5"):
                job = _Job(layout, predictor, folder, batch_size, n_threads, device, log)
                job.on_compute = tracker.begin
                try:
                    result = _run(job, items, out, top_k, n_workers, engine, ray_address, force, progress)
                finally:
                    job.close()
                    if not any(folder.glob("*.parts/part-*.h5")):  # done, or nothing to resume
                        shutil.rmtree(folder, ignore_errors=True)
        except StoreLockedError as err:
            raise StoreLockedError(
                f"another featstore score job is writing {out} with the same model; wait for it to finish ({err})"
            ) from None
        shutil.rmtree(folder, ignore_errors=True)
    result.update(
        model=predictor.name,
        kind=predictor.kind,
        input=os.fspath(input),
        skipped=skipped,
        n_skipped=len(skipped),
        run_id=run_id,
        seconds=round(time.perf_counter() - t0, 3),
        emissions=tracker.result,
    )
    res = ScoreResult(**result)
    em = res.emissions
    record_run(
        layout,
        {
            "id": run_id,
            "command": "score",
            "model": res.model,
            "kind": res.kind,
            "input": res.input,
            "output": res.output,
            "engine": res.engine,
            "device": res.device,
            "backbone_digests": [s.digest for s in predictor.stages],
            "counts": {
                k: getattr(res, k)
                for k in (
                    "n_images",
                    "n_scored",
                    "n_errors",
                    "n_cached",
                    "n_resumed",
                    "n_computed",
                    "n_skipped",
                )
            },
            "seconds": res.seconds,
            "images_per_s": res.images_per_s,
            "energy_kwh": em.energy_kwh,
            "co2_kg": em.co2_kg,
            "emissions": em.to_dict(),
        },
    )
    return res


def _run(job: _Job, items, out: Path, top_k, n_workers, engine_name, ray_address, force, progress) -> dict:
    remove_stale_temporaries(out.parent, out.name)
    job.open_sources(force)
    if engine_name == "ray":
        from featstore.inference.ray_engine import RayEngine

        engine = RayEngine(ray_address, n_workers=n_workers, device=job.device, batch_size=job.batch_size)
        loaded_iter = _ray_loaded(job, items, engine)
    else:
        loaded_iter = _local_loaded(job, items, n_workers or default_threads())
    rows: list[tuple[str, str | None, str | None]] = []
    batch: list[tuple[str, object]] = []
    pending: set[str] = set()
    total = len(items)
    t0 = time.perf_counter()
    for done, loaded in enumerate(loaded_iter, start=1):
        rows.append((loaded.item.rel, loaded.digest, loaded.error))
        if not loaded.error and loaded.pixels is not None and loaded.digest not in pending:
            pending.add(loaded.digest)
            batch.append((loaded.digest, loaded.pixels))
            if len(batch) >= job.batch_size:
                job.compute(batch)
                batch = []
        if progress:
            progress(done, total)
    if batch:
        job.compute(batch)
    loop_s = time.perf_counter() - t0
    errors = [Skipped(path, err) for path, _, err in rows if err]
    n_scored = len(rows) - len(errors)
    if n_scored == 0:
        reasons = "; ".join(f"{s.path}: {s.reason}" for s in errors[:3])
        raise DatasetError(f"none of the {len(rows)} images could be read ({reasons}); nothing was written")
    p = job.predictor
    origins = {"computed": 0, "cached": 0, "resumed": 0}
    for _, d, err in rows:
        if not err:
            origins[job.origin(d)] += 1
    with PredictionWriter(out, p.class_names, top_k) as writer:
        for start in range(0, len(rows), WRITE_ROWS):
            chunk = rows[start : start + WRITE_ROWS]
            ok = [i for i, (_, _, err) in enumerate(chunk) if not err]
            proba = np.full((len(chunk), len(p.class_names)), np.nan)
            if ok:
                proba[ok] = p.predict_proba(job.gather([chunk[i][1] for i in ok]))
            writer.write(
                PredictionBatch(
                    paths=[r[0] for r in chunk],
                    digests=[r[1] for r in chunk],
                    errors=[r[2] for r in chunk],
                    proba=proba,
                )
            )
        writer.commit()
    return {
        "output": str(out),
        "format": writer.format,
        "top_k": writer.k,
        "class_names": p.class_names,
        "n_images": len(rows),
        "n_scored": n_scored,
        "n_errors": len(errors),
        "n_cached": origins["cached"],
        "n_resumed": origins["resumed"],
        "n_computed": origins["computed"],
        "engine": engine_name,
        "device": job.device_used,
        "images_per_s": round(len(rows) / loop_s, 2) if loop_s > 0 else None,
        "errors": errors,
    }
