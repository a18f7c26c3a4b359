"""Each stage's outputs for an image: from the store's feature sets, from parts a killed run left,
or computed now (to part files, or in memory for `predict`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from featstore.data.decode import LoadedImage, load_images, resolve_decoder
from featstore.data.options import DecodeOptions
from featstore.data.scan import ImageItem
from featstore.errors import InvalidOptionError, StoreError
from featstore.inference.devices import default_threads
from featstore.inference.options import InferenceOptions
from featstore.reporter import SILENT, Reporter
from featstore.scoring.options import batch_rows
from featstore.scoring.predictor import Predictor
from featstore.store.layout import StoreLayout
from featstore.store.parts import FeatureSource, PartWriter, clear_parts, read_parts
from featstore.store.shards import ShardedReader, feature_set_names, open_set

#: One row of a job, in input order: (path as shown, or None for pixels given as an array;
#: content digest, or the key of those pixels; error or None).
Row = tuple[str | None, str | None, str | None]


def seed_from_feature_sets(
    layout: StoreLayout, predictor: Predictor, sources: list[FeatureSource]
) -> list[int]:
    """Add the rows of every feature set matching a stage's cache tag to that stage's source;
    return how many sets each stage got (damaged files are passed over)."""
    counts = [0] * len(sources)
    if predictor.kind != "head" or not layout.features.is_dir():
        return counts
    for name in feature_set_names(layout):
        try:
            reader = open_set(layout.feature_set(name))
        except (StoreError, OSError):
            continue
        a = reader.attrs
        tag = f"{a.get('backbone_digest')}:{a.get('resize')}:{a.get('dtype')}"
        for i, (stage, source) in enumerate(zip(predictor.stages, sources, strict=True)):
            if tag == stage.cache_tag and reader.n_features == stage.n_outputs:
                files = (
                    reader.shard_rows() if isinstance(reader, ShardedReader) else [(reader, reader.rows())]
                )
                for file, rows in files:
                    keys = [
                        d if v == 0 else f"view{v}:{d}"
                        for d, v in zip(rows.digests, rows.view.tolist(), strict=True)
                    ]
                    source.add_reader(file, keys)
                counts[i] += 1
                break
        else:
            reader.close()
    return counts


def stage_target(stage, options: InferenceOptions):
    """The (device, runtime) that run `stage`: the run's own for fp32 features, else the runtime
    the head's features came from (InvalidOptionError when another was asked for)."""
    from featstore.inference.runtimes import resolve

    if stage.runtime == "any":
        return resolve(options.device, options.runtime, stage.precision)
    if options.runtime not in ("auto", stage.runtime):
        raise InvalidOptionError(
            "runtime",
            f"the head was trained on {stage.precision} features of {stage.label} computed by "
            f"{stage.runtime}; {options.runtime} would compute other features: use --runtime "
            f"{stage.runtime} or auto",
        )
    return resolve(options.device, stage.runtime, stage.precision)


class StageOutputs:
    """The outputs of every stage of `predictor` for the images of one job: in part files under
    `folder` (reused by a re-run) or in memory; `on_compute` is called before the first batch."""

    def __init__(
        self,
        layout: StoreLayout,
        predictor: Predictor,
        inference: InferenceOptions,
        folder: Path | None = None,
        reporter: Reporter = SILENT,
    ):
        self.layout, self.predictor, self.inference, self.folder = layout, predictor, inference, folder
        self.batch_size = batch_rows(inference)
        self.reporter = reporter
        n = len(predictor.stages)
        self.sources = [FeatureSource() for _ in range(n)]
        self.memory: list[dict[str, np.ndarray]] = [{} for _ in range(n)]
        self.writers: list[PartWriter | None] = [None] * n
        self.n_seed_sources = [0] * n
        self.on_compute: Callable[[], None] = lambda: None
        self.run_stage: Callable[[int, list], np.ndarray] | None = None
        self.device_used: str | None = None
        self.computed: set[str] = set()

    def part_folder(self, i: int) -> Path:
        """The folder of stage `i`'s part files."""
        return self.folder / f"stage{i}.parts"

    def open_sources(self, force: bool) -> None:
        """Make the store's feature sets and this job's earlier parts available (none with `force`)."""
        p = self.predictor
        if not force:
            self.n_seed_sources = seed_from_feature_sets(self.layout, p, self.sources)
            if any(self.n_seed_sources):
                self.reporter.log(
                    f"reusing the features of {sum(self.n_seed_sources)} feature set(s) of "
                    f"{' + '.join(s.label for s in p.stages)} in the store"
                )
        if self.folder is None:
            return
        for i, (stage, source) in enumerate(zip(p.stages, self.sources, strict=True)):
            if force:
                clear_parts(self.part_folder(i))
            read_parts(self.part_folder(i), stage.cache_tag, "float32", source)

    def _has(self, i: int, digest: str) -> bool:
        return digest in self.sources[i] or digest in self.memory[i]

    def is_known(self, item: ImageItem, digest: str) -> bool:
        """True when every stage already has outputs for `digest` (run in the decode threads)."""
        return all(self._has(i, digest) for i in range(len(self.sources)))

    def known_sets(self) -> list[frozenset]:
        """The digests each stage has outputs for now."""
        return [frozenset(s.digests()) | frozenset(m) for s, m in zip(self.sources, self.memory, strict=True)]

    def _local_stage(self, i: int, pixels: list) -> np.ndarray:
        return self.sessions[i].run(np.stack(pixels))

    def _open_local(self) -> None:
        o, trt = self.inference, self.layout.backbones / "trt-cache"
        self.sessions = []
        for s in self.predictor.stages:
            device, runtime = stage_target(s, o)
            session = runtime.open(
                s.path,
                device,
                o.n_threads or default_threads(),
                precision=s.precision,
                settings=s.settings,
                trt_cache_dir=trt,
            )
            self.sessions.append(session)
        self.device_used = self.sessions[0].device
        self.run_stage = self._local_stage

    def compute(self, batch: list[tuple[str, object]]) -> None:
        """Run every stage lacking outputs for `batch`'s (digest, payload) pairs and keep them;
        StoreError (nothing kept) when a stage returns NaN or infinite values."""
        if self.run_stage is None:
            self.on_compute()
            self._open_local()
        for i, stage in enumerate(self.predictor.stages):
            todo = [(d, payload) for d, payload in batch if not self._has(i, d)]
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
            if self.folder is None:
                self.memory[i].update(zip(keys, outputs, strict=True))
            else:
                if self.writers[i] is None:
                    self.writers[i] = PartWriter(self.part_folder(i), stage.cache_tag, "float32")
                self.sources[i].add_path(self.writers[i].write(keys, outputs), keys)
            self.computed.update(keys)

    def gather(self, digests: list[str]) -> list[np.ndarray]:
        """Outputs of every stage for `digests`, one (n, n_outputs) float32 array per stage."""
        out = []
        for stage, source, memory in zip(self.predictor.stages, self.sources, self.memory, strict=True):
            block = np.empty((len(digests), stage.n_outputs), dtype=np.float32)
            stored = [j for j, d in enumerate(digests) if d not in memory]
            for j, d in enumerate(digests):
                if d in memory:
                    block[j] = memory[d]
            if stored:
                block[stored] = source.gather([digests[j] for j in stored], stage.n_outputs, "float32")
            out.append(block)
        return out

    def proba(self, rows: list[Row]) -> np.ndarray:
        """Class probabilities of `rows`, (len(rows), n_classes) float64, NaN for error rows."""
        p = self.predictor
        ok = [i for i, (_, _, err) in enumerate(rows) if not err]
        proba = np.full((len(rows), len(p.class_names)), np.nan)
        if ok:
            proba[ok] = p.predict_proba(self.gather([rows[i][1] for i in ok]))
        return proba

    def origin(self, digest: str) -> str:
        """Where the outputs of `digest` come from: computed, cached (feature sets) or resumed (parts)."""
        if digest in self.computed:
            return "computed"
        seeded = all(s.source_of(digest) < n for s, n in zip(self.sources, self.n_seed_sources, strict=True))
        return "cached" if seeded else "resumed"

    def close(self) -> None:
        """Close every file the sources opened."""
        for s in self.sources:
            s.close()


def _local_loaded(
    outputs: StageOutputs, items: list[ImageItem], decode: DecodeOptions
) -> Iterator[LoadedImage]:
    p, n_workers = outputs.predictor, decode.n_workers or default_threads()
    yield from load_images(
        items,
        size_px=p.input_size,
        resize=p.resize,
        n_workers=n_workers,
        is_known=outputs.is_known,
        max_ahead=max(2 * outputs.batch_size, 8 * n_workers),
        decoder=resolve_decoder(decode.decoder),
    )


def _ray_loaded(
    outputs: StageOutputs, items: list[ImageItem], decode: DecodeOptions
) -> Iterator[LoadedImage]:
    from featstore.inference.ray_engine import RayEngine, RunSpec

    o, p = outputs.inference, outputs.predictor
    engine = RayEngine(
        o.ray_address, n_workers=decode.n_workers, device=o.device, batch_size=outputs.batch_size
    )
    outputs.on_compute()
    models = [s.path.read_bytes() for s in p.stages]
    outputs.run_stage = lambda i, payloads: np.stack([pl[i] for pl in payloads]).astype(np.float32)
    widths = [s.n_outputs for s in p.stages]
    specs = [RunSpec.of(s, o.runtime) for s in p.stages]
    for loaded in engine.load(items, p.input_size, p.resize, models, outputs.known_sets(), widths, specs):
        outputs.device_used = engine.description
        yield loaded


def compute_outputs(
    outputs: StageOutputs,
    items: list[ImageItem],
    decode: DecodeOptions,
) -> tuple[list[Row], float]:
    """Read every item and compute the stage outputs it lacks, in batches; return the rows in item
    order (an unreadable image is a row with its error) and the loop's seconds."""
    loaded_iter = (_ray_loaded if outputs.inference.engine == "ray" else _local_loaded)(
        outputs, items, decode
    )
    rows: list[Row] = []
    batch: list[tuple[str, object]] = []
    pending: set[str] = set()
    t0 = time.perf_counter()
    for done, loaded in enumerate(loaded_iter, start=1):
        rows.append((loaded.item.rel, loaded.digest, loaded.error))
        if not loaded.error and loaded.pixels is not None and loaded.digest not in pending:
            pending.add(loaded.digest)
            batch.append((loaded.digest, loaded.pixels))
            if len(batch) >= outputs.batch_size:
                outputs.compute(batch)
                batch = []
        outputs.reporter.progress(done, len(items))
    if batch:
        outputs.compute(batch)
    return rows, time.perf_counter() - t0
