"""`featstore extract`: images -> backbone -> feature set, with the content-digest cache.

Owns the orchestration only: scanning (`images`), the export (`export`), the session
(`runtime`), augmented views (`augment`) and the file formats (`store`) live in their modules.
A re-run computes only rows whose cache key is new (the image digest for a plain row; digest,
view and augmentation config for a view), drops rows of files that are gone, and resumes the
parts a killed run left behind.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from featstore.backbones.registry import BackboneRecipe, resolve_recipe
from featstore.data.augment import AugmentConfig, parse_augment, row_keys, view_key, view_seed
from featstore.data.augment import augment as augment_pixels
from featstore.data.images import (
    Dataset,
    ImageItem,
    Skipped,
    check_resize,
    load_images,
    resolve_decoder,
    scan_dataset,
)
from featstore.emissions import Emissions, track_emissions
from featstore.errors import DatasetError, StoreError, StoreMismatchError
from featstore.inference.precision import (
    ModelVariant,
    accuracy_warning,
    check_precision,
    check_sample_sizes,
    precision_label,
    speed_warning,
)
from featstore.inference.profiling import StageTimes
from featstore.runtime import (
    CPU_BATCH,
    GPU_PROBE,
    TRT_MAX_BATCH,
    check_device,
    choose_batch_size,
    default_threads,
    engine_cached,
    open_session,
    resolve_device,
)
from featstore.store.featuresets import (
    DTYPES,
    FeatureRows,
    FeatureSetReader,
    FeatureSource,
    PartWriter,
    clear_parts,
    feature_set_lock,
    parts_dir,
    read_parts,
    remove_stale_temporaries,
    stored_digest,
    write_feature_set,
)
from featstore.store.layout import StoreLayout, resolve_store
from featstore.store.runlog import new_run_id, record_run

#: progress(n_done, n_total): called after every image read.
Progress = Callable[[int, int], None]


@dataclass
class ExtractResult:
    """What one `extract` run did; `skipped` lists every file left out and why.

    `n_images` counts images (plain rows), `n_views` the augmented rows stored beside them;
    `n_computed`, `n_reused`, `n_resumed` and `n_removed` count rows, plain and views alike.
    """

    feature_set: str
    path: str
    dataset: str
    layout: str
    backbone: str
    backbone_digest: str
    weights: str
    input_size: int
    n_features: int
    dtype: str
    device: str | None
    n_images: int
    n_views: int
    n_computed: int
    n_reused: int
    n_resumed: int
    n_removed: int
    n_skipped: int
    written: bool
    seconds: float
    images_per_s: float | None
    class_names: list[str]
    run_id: str
    skipped: list[Skipped] = field(default_factory=list)
    empty_classes: list[str] = field(default_factory=list)
    augment: dict | None = None
    emissions: Emissions = field(default_factory=Emissions)
    precision: str = "fp32"
    decoder: str = "pillow"
    batch_size: int | None = None
    precision_check: dict | None = None
    calibration: dict | None = None
    warnings: list[str] = field(default_factory=list)
    profile: dict | None = None

    def to_dict(self) -> dict:
        """Return a JSON-ready dict."""
        d = asdict(self)
        d["skipped"] = [s.to_dict() for s in self.skipped]
        return d


def _check_options(dtype: str, batch_size: int | str) -> None:
    if dtype not in DTYPES:
        raise DatasetError(f"--dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    if batch_size == "auto":
        return
    try:
        ok = int(batch_size) >= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise DatasetError(f"--batch-size must be a whole number of at least 1, or auto; not {batch_size!r}")


def extract(
    data: str,
    backbone: str = "mobilenet_v2",
    *,
    store: str | None = None,
    name: str | None = None,
    weights: str = "imagenet",
    input_size: int | None = None,
    layer: str | None = None,
    pooling: str = "avg",
    resize: str = "squash",
    dtype: str = "float32",
    precision: str = "fp32",
    decoder: str = "auto",
    batch_size: int | str = "auto",
    n_calibration: int | None = None,
    n_check: int | None = None,
    recalibrate: bool = False,
    n_workers: int | None = None,
    n_threads: int | None = None,
    device: str = "auto",
    force: bool = False,
    wait: bool = False,
    emissions: bool = True,
    country: str | None = None,
    augment: str | None = None,
    copies: int = 0,
    augment_seed: int = 0,
    engine: str = "local",
    ray_address: str | None = None,
    progress: Progress | None = None,
    log: Callable[[str], None] | None = None,
) -> ExtractResult:
    """Extract features of every image of `data` with `backbone` into the store.

    Parameters
    ----------
    data
        A folder of class folders, of train/val/test folders, or of images; or a CSV
        manifest `path,label[,split]`; or a .txt list of paths.
    backbone
        A registry name (`featstore backbones`), a .onnx / .keras file, or `finetune:<run-id>`
        (the backbone of a finished fine-tune run; feature set `<dataset>@finetune-<run-id>`).
    precision
        fp32; int8 (static quantization calibrated on `n_calibration` images of `data`, or
        the store's int8 model of that backbone unless `recalibrate`; checked against fp32 on
        `n_check` held-out images); or fp16 (GPU only). The set is named `...-int8`/`-fp16`.
    decoder
        auto, pillow or simplejpeg (same pixels; simplejpeg is an optional dependency).
    batch_size
        Images per inference batch, or auto (32 on the CPU, probed on a GPU).
    augment, copies, augment_seed
        A comma list of flip, rotate, zoom, contrast, translate, and how many augmented views
        of each training image (split "train", or every image when the dataset has no split)
        to store beside its plain row, as rows with `view` 1..copies. Views are made from the
        decoded (size, size, 3) uint8 pixels, seeded by image digest, view and `augment_seed`.
    engine, ray_address
        "local" (decode threads and an ONNX Runtime session here) or "ray": the images are
        read, decoded and run in the actors of a Ray cluster (`featstore.inference.ray_engine`; the one
        at `ray_address`, or a new local one; `n_workers` actors, default one per GPU or CPU),
        and the store is written here exactly as by the local engine.

    Returns
    -------
    ExtractResult
        Counts of images and views; computed, reused, resumed, removed rows; skipped files;
        seconds and rows computed per second.

    Raises
    ------
    DatasetError, StoreError, ExportError, DeviceError, WeightsError
        Bad input or store state, or ImageNet weights that cannot be downloaded (on first
        use, into Keras' cache; `progress(bytes, total, "download")`); nothing stored is lost.
    """
    check_resize(resize)
    _check_options(dtype, batch_size)
    check_sample_sizes(n_calibration, n_check)
    decoder = resolve_decoder(decoder)
    augment_config = parse_augment(augment, copies, augment_seed)
    ray_batch = CPU_BATCH if batch_size == "auto" else int(batch_size)
    ray_hook = _engine_hook(engine, ray_address, augment_config, n_workers, device, ray_batch)
    # with --engine ray the devices are the cluster's, checked when its actors start
    check_precision(precision, check_device(device) if ray_hook is None else device.replace("auto", "cpu"))
    layout = resolve_store(store)
    dataset = scan_dataset(data, name)
    recipe = resolve_recipe(
        backbone,
        weights=weights,
        input_size=input_size,
        layer=layer,
        pooling=pooling,
        layout=layout,
        progress=progress,
        log=log,
    )
    run_id = new_run_id("extract")
    t0 = time.perf_counter()
    with track_emissions(emissions, country, layout.emissions, lazy=True) as tracker:
        job = _Extraction(
            layout, dataset, recipe, resize, dtype, batch_size, n_workers, n_threads, device, log
        )
        job.augment = augment_config
        job.engine = ray_hook
        job.on_compute = tracker.begin
        job.precision, job.decoder = precision, decoder
        job.calibration_options = dict(n_calibration=n_calibration, n_check=n_check, recalibrate=recalibrate)
        path = layout.feature_set(f"{dataset.name}@{precision_label(recipe.label, precision)}")
        with feature_set_lock(path, wait=wait):
            result = job.run(path, force, progress, run_id)
    result.seconds = round(time.perf_counter() - t0, 3)
    result.emissions = em = tracker.result
    record_run(
        layout,
        {
            "id": run_id,
            "command": "extract",
            "dataset": dataset.name,
            "data": str(dataset.root),
            "backbone": result.backbone,
            "backbone_digest": result.backbone_digest,
            "precision": precision,
            "feature_set": result.feature_set,
            "device": result.device,
            "engine": engine,
            "batch_size": result.batch_size,
            "counts": {
                k: getattr(result, k)
                for k in (
                    "n_images",
                    "n_views",
                    "n_computed",
                    "n_reused",
                    "n_resumed",
                    "n_removed",
                    "n_skipped",
                )
            },
            "augment": result.augment,
            "seconds": result.seconds,
            "images_per_s": result.images_per_s,
            "energy_kwh": em.energy_kwh,
            "co2_kg": em.co2_kg,
            "emissions": em.to_dict(),
        },
    )
    return result


def _engine_hook(engine, ray_address, augment_config, n_workers, device, batch_size):
    """None for the local engine; for "ray", the object `_Extraction` reads and computes through."""
    from featstore.inference.ray_engine import ExtractEngine, check_engine

    if check_engine(engine, ray_address) == "local":
        return None
    if augment_config is not None:
        raise DatasetError("--augment works with the local engine only; run it without --engine ray")
    return ExtractEngine(ray_address, n_workers, device, batch_size)


class _Extraction:
    """One extract run over one feature set, holding its lock.

    `engine` None: this process decodes (threads) and runs the backbone (one session). An
    engine object replaces both: `engine.load(job, items)` yields the LoadedImages (their
    `pixels` may carry features computed elsewhere) and `engine.open(job)` the session that
    `_compute` runs each batch through.
    """

    def __init__(self, layout, dataset, recipe, resize, dtype, batch_size, n_workers, n_threads, device, log):
        self.layout: StoreLayout = layout
        self.dataset: Dataset = dataset
        self.recipe: BackboneRecipe = recipe
        self.resize, self.dtype = resize, dtype
        self.batch_auto = batch_size == "auto"
        self.batch_size = CPU_BATCH if self.batch_auto else int(batch_size)
        self.n_workers = n_workers or default_threads()
        self.n_threads = n_threads
        self.device = device
        self.log = log or (lambda msg: None)
        self.exported = None
        self.session = None
        self.writer: PartWriter | None = None
        self.setup_s = 0.0
        self.on_compute: Callable[[], None] = lambda: None
        self.augment: AugmentConfig | None = None
        self.known: frozenset[str] = frozenset()
        self._views_for_all = not dataset.has_split
        self.engine = None
        self.precision, self.decoder = "fp32", "pillow"
        self.calibration_options: dict = {}
        self.variant: ModelVariant | None = None
        self.times = StageTimes()

    @property
    def cache_tag(self) -> str:
        """What makes stored features reusable: the model (export and precision), resize, dtype."""
        return f"{self.variant.digest}:{self.resize}:{self.dtype}"

    def n_views(self, item: ImageItem) -> int:
        """How many augmented views `item` gets: all training images, or all when no split."""
        if self.augment is None or not (self._views_for_all or item.split == "train"):
            return 0
        return self.augment.copies

    def keys(self, item: ImageItem, digest: str) -> list[str]:
        """Cache keys of the rows of `item`: its digest (view 0), then one per augmented view."""
        return [view_key(digest, v, self.augment) for v in range(self.n_views(item) + 1)]

    def is_known(self, item: ImageItem, digest: str) -> bool:
        """True when every row of `item` is already stored (run in the decode threads)."""
        return all(k in self.known for k in self.keys(item, digest))

    def make_views(self, item: ImageItem, digest: str, pixels: np.ndarray) -> list[tuple[str, np.ndarray]]:
        """The (key, pixels) of each augmented view of `item` not yet stored (decode threads)."""
        cfg = self.augment
        out = []
        for v in range(1, self.n_views(item) + 1):
            key = view_key(digest, v, cfg)
            if key not in self.known:
                out.append((key, augment_pixels(pixels, cfg, view_seed(digest, v, cfg.seed))))
        return out

    def _open_old(self, path, force: bool, source: FeatureSource):
        if force or not path.exists():
            return None, None, None
        reader = FeatureSetReader(path)
        a = reader.attrs
        found = f"{a.get('backbone_digest')}:{a.get('resize')}:{a.get('dtype')}"
        if found != self.cache_tag:
            reader.close()
            raise StoreMismatchError(
                f"{path.stem} holds features of another export or settings (backbone digest "
                f"{str(a.get('backbone_digest'))[:12]}, precision {a.get('precision', 'fp32')}, resize "
                f"{a.get('resize')}, dtype {a.get('dtype')}) than requested (digest {self.variant.digest[:12]}, "
                f"precision {self.precision}, resize {self.resize}, dtype {self.dtype}); pass --force to "
                "replace it, or --name to keep both"
            )
        rows = reader.rows()
        try:
            old_config = AugmentConfig.from_dict(a["augment"]) if a.get("augment") else None
            keys = row_keys(rows.digests, rows.view, old_config)
        except (KeyError, TypeError, ValueError, AttributeError, StoreError) as err:
            reader.close()
            raise StoreError(
                f"{path.stem} holds augmented views without a readable augmentation config ({err}); "
                "pass --force to rebuild it"
            ) from err
        source.add_reader(reader, keys)
        return rows, a, keys

    def _open(self, n_todo: int) -> None:
        """Open the session (and, with --batch-size auto, pick the batch size) at the first batch."""
        t0 = time.perf_counter()
        self.on_compute()
        if self.engine is not None:  # the Ray engine computes in its actors
            self.session = self.engine.open(self)
            self.writer = PartWriter(parts_dir(self.path), self.cache_tag, self.dtype)
            self.setup_s = time.perf_counter() - t0
            return
        device = resolve_device(self.device)
        model = self.variant.path
        if device == "tensorrt" and self.precision == "fp16":
            model = self.exported.path  # TensorRT picks its fp16 kernels from the fp32 graph
        trt_dir, prefix = self.layout.backbones / "trt-cache", f"{self.variant.path.stem}-trt"
        if device == "tensorrt":
            self.log(
                f"reusing the TensorRT engine in {trt_dir}"
                if engine_cached(trt_dir, prefix)
                else f"building the TensorRT engine (the first build takes minutes; cached in {trt_dir})"
            )
        self.session = open_session(model, self.device, self.n_threads, trt_dir, self.precision, prefix)
        if self.batch_auto:
            self.batch_size = choose_batch_size(self.session, self.recipe.input_size, n_todo)
        self.writer = PartWriter(parts_dir(self.path), self.cache_tag, self.dtype)
        self.setup_s = time.perf_counter() - t0

    def _compute(
        self, pixels: list[np.ndarray], keys: list[str], source: FeatureSource, n_todo: int = 0
    ) -> None:
        if self.session is None:
            self._open(n_todo)
        feats = self.session.run(np.stack(pixels))
        bad = ~np.isfinite(feats).all(axis=1)
        if bad.any():
            raise StoreError(
                f"the backbone returned NaN or infinite features for {int(bad.sum())} images "
                f"(e.g. cache key {keys[int(np.argmax(bad))][:12]}); nothing was stored for them"
            )
        t0 = time.perf_counter()
        written = self.writer.write(keys, feats)
        self.times.write_s += time.perf_counter() - t0
        source.add_path(written, keys)

    def run(self, path, force: bool, progress: Progress | None, run_id: str) -> ExtractResult:
        remove_stale_temporaries(path.parent, path.name)
        pdir = parts_dir(path)
        if force:
            clear_parts(pdir)
        from featstore.backbones.export import ensure_backbone

        self.exported = ensure_backbone(self.recipe, self.layout, self.log)
        from featstore.inference.precision import prepare_model

        self.variant = prepare_model(
            self.exported,
            self.precision,
            self.layout,
            prefer=None if force else stored_digest(path),
            dataset=self.dataset,
            resize=self.resize,
            decoder=self.decoder,
            n_threads=self.n_threads,
            log=self.log,
            **self.calibration_options,
        )
        source = FeatureSource()
        try:
            old_rows, old_attrs, old_keys = self._open_old(path, force, source)
            n_old_sources = 1 if old_rows is not None else 0
            n_parts_rows = read_parts(pdir, self.cache_tag, self.dtype, source)
            self.known = frozenset(source.digests())
            self.path = path
            return self._run(
                path, source, old_rows, old_attrs, old_keys, n_old_sources, n_parts_rows, progress, run_id
            )
        finally:
            source.close()

    def _run(self, path, source, old_rows, old_attrs, old_keys, n_old, n_parts_rows, progress, run_id):
        ds = self.dataset
        known = self.known
        skipped = list(ds.skipped)
        kept: list[tuple[ImageItem, str, list[str]]] = []
        batch_px: list[np.ndarray] = []
        batch_keys: list[str] = []
        pending: set[str] = set()
        total = len(ds.items)
        t0 = time.perf_counter()
        # keep the decoders a batch or two ahead of inference (a GPU batch may be large)
        on_gpu = resolve_device(self.device) != "cpu"
        biggest = (
            (TRT_MAX_BATCH if self.device == "tensorrt" else GPU_PROBE[-1]) if on_gpu else self.batch_size
        )
        ahead = max(2 * (biggest if self.batch_auto else self.batch_size), 8 * self.n_workers)
        if self.augment is not None:  # each image in flight may carry `copies` views
            ahead = max(2 * self.n_workers, ahead // (1 + self.augment.copies))
        loaded_iter = load_images(
            ds.items,
            size_px=self.recipe.input_size,
            resize=self.resize,
            n_workers=self.n_workers,
            is_known=self.is_known,
            make_views=self.make_views if self.augment is not None else None,
            max_ahead=ahead,
            decoder=self.decoder,
        )
        if self.engine is not None:  # a generator: the local loader above never starts
            loaded_iter = self.engine.load(self, ds.items)
        times = self.times
        times.n_workers = self.n_workers
        t_wait = time.perf_counter()
        for done, loaded in enumerate(loaded_iter, start=1):
            times.wait_s += time.perf_counter() - t_wait
            times.read_s += loaded.read_s
            times.decode_s += loaded.decode_s
            if loaded.error:
                skipped.append(Skipped(loaded.item.rel, loaded.error))
            else:
                kept.append((loaded.item, loaded.digest, self.keys(loaded.item, loaded.digest)))
                todo = list(loaded.views)
                if loaded.pixels is not None and loaded.digest not in known:
                    todo.insert(0, (loaded.digest, loaded.pixels))
                for key, pixels in todo:
                    if key in pending:
                        continue
                    pending.add(key)
                    batch_px.append(pixels)
                    batch_keys.append(key)
                    if len(batch_px) >= self.batch_size:
                        self._compute(batch_px, batch_keys, source, total - done + len(batch_px))
                        batch_px, batch_keys = [], []
            if progress:
                progress(done, total)
            t_wait = time.perf_counter()
        if batch_px:
            self._compute(batch_px, batch_keys, source, len(batch_px))
        loop_s = time.perf_counter() - t0 - self.setup_s
        if self.session is not None:
            times.transfer_s, times.inference_s = self.session.transfer_s, self.session.inference_s
            times.device = self.session.device
        times.n_images, times.wall_s, times.setup_s = len(pending), loop_s, self.setup_s
        if not kept:
            reasons = "; ".join(f"{s.path}: {s.reason}" for s in skipped[:3])
            raise DatasetError(f"none of the {total} images of {ds.root} could be read ({reasons})")

        # rows ordered by (path, view): items come sorted by path, views follow their image
        keys = [k for _, _, item_keys in kept for k in item_keys]
        rows = FeatureRows(
            paths=[it.rel for it, _, ks in kept for _ in ks],
            labels=np.array([it.label for it, _, ks in kept for _ in ks], dtype=np.int32),
            digests=[d for _, d, ks in kept for _ in ks],
            split=[it.split for it, _, ks in kept for _ in ks],
            view=np.array([v for _, _, ks in kept for v in range(len(ks))], dtype=np.int16),
        )
        reused = sum(1 for k in keys if k in known and n_old and source.source_of(k) == 0)
        resumed = sum(1 for k in keys if k in known and not (n_old and source.source_of(k) == 0))
        old_triples = (
            set(zip(old_rows.paths, old_rows.view.tolist(), old_keys, strict=True))
            if old_rows is not None
            else set()
        )
        new_triples = set(zip(rows.paths, rows.view.tolist(), keys, strict=True))
        n_removed = len(old_triples - new_triples)

        augment_attr = self.augment.to_dict() if self.augment is not None else None
        n_features, onnx_sha = self.exported.n_features, self.exported.onnx_sha256
        unchanged = (
            old_rows is not None
            and n_parts_rows == 0
            and not pending
            and old_rows.paths == rows.paths
            and old_rows.digests == rows.digests
            and np.array_equal(old_rows.view, rows.view)
            and old_rows.split == rows.split
            and np.array_equal(old_rows.labels, rows.labels)
            and list(old_attrs.get("class_names", [])) == ds.class_names
            and old_attrs.get("augment") == augment_attr
        )
        fs_name = path.stem
        if not unchanged:
            now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            from featstore import __version__

            attrs = {
                "dataset": ds.name,
                "layout": ds.layout,
                "data_root": str(ds.root),
                "class_names": ds.class_names,
                "backbone": precision_label(self.recipe.label, self.precision),
                "backbone_name": self.recipe.name,
                "backbone_digest": self.variant.digest,
                "onnx_sha256": onnx_sha,
                "precision": self.precision,
                "base_digest": self.exported.digest,
                "model": self.variant.describe(),
                "recipe": self.recipe.to_dict(),
                "input_size": self.recipe.input_size,
                "resize": self.resize,
                "augment": augment_attr,
                "featstore_version": __version__,
                "created": (old_attrs or {}).get("created", now),
                "updated": now,
                "run_id": run_id,
            }
            write_feature_set(path, rows, source, n_features, self.dtype, attrs, keys=keys)
            source.close()
            clear_parts(parts_dir(path))
        n_computed = len(pending)
        n_views = int((rows.view > 0).sum())
        return ExtractResult(
            feature_set=fs_name,
            path=str(path),
            dataset=ds.name,
            layout=ds.layout,
            backbone=precision_label(self.recipe.label, self.precision),
            backbone_digest=self.variant.digest,
            weights=self.recipe.weights,
            input_size=self.recipe.input_size,
            n_features=n_features,
            dtype=self.dtype,
            device=self.session.device if self.session else None,
            n_images=len(kept),
            n_views=n_views,
            n_computed=n_computed,
            n_reused=reused,
            n_resumed=resumed,
            n_removed=n_removed,
            n_skipped=len(skipped),
            written=not unchanged,
            seconds=0.0,
            images_per_s=round(n_computed / loop_s, 2) if n_computed and loop_s > 0 else None,
            class_names=ds.class_names,
            run_id=run_id,
            skipped=skipped,
            empty_classes=ds.empty_classes,
            augment=augment_attr,
            precision=self.precision,
            decoder=self.decoder,
            batch_size=self.batch_size if self.session is not None else None,
            precision_check=self.variant.check,
            calibration=self.variant.calibration,
            warnings=[w for w in (accuracy_warning(self.variant), speed_warning(self.variant)) if w],
            profile=self.times.to_dict() if n_computed else None,
        )
