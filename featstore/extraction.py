"""`featstore extract`: images -> backbone -> feature set, with the content-digest cache.

Owns the orchestration only: scanning (`images`), the export (`export`), the session
(`runtime`) and the file formats (`store`) live in their modules. A re-run computes only
images whose bytes are new, drops rows of files that are gone, and resumes the parts a killed
run left behind.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from featstore.backbones import BackboneRecipe, resolve_recipe
from featstore.emissions import Emissions, track_emissions
from featstore.errors import DatasetError, StoreError, StoreMismatchError
from featstore.images import Dataset, Skipped, check_resize, load_images, scan_dataset
from featstore.layout import StoreLayout, resolve_store
from featstore.runs import new_run_id, record_run
from featstore.runtime import default_threads, open_session
from featstore.store import (
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
    write_feature_set,
)

#: progress(n_done, n_total): called after every image read.
Progress = Callable[[int, int], None]


@dataclass
class ExtractResult:
    """What one `extract` run did; `skipped` lists every file left out and why."""

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
    emissions: Emissions = field(default_factory=Emissions)

    def to_dict(self) -> dict:
        """Return a JSON-ready dict."""
        d = asdict(self)
        d["skipped"] = [s.to_dict() for s in self.skipped]
        return d


def _check_options(dtype: str, batch_size: int) -> None:
    if dtype not in DTYPES:
        raise DatasetError(f"--dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    if batch_size < 1:
        raise DatasetError(f"--batch-size must be at least 1, not {batch_size}")


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
    batch_size: int = 32,
    n_workers: int | None = None,
    n_threads: int | None = None,
    device: str = "auto",
    force: bool = False,
    wait: bool = False,
    emissions: bool = True,
    country: str | None = None,
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
        A registry name (`featstore backbones`) or a .onnx / .keras file.

    Returns
    -------
    ExtractResult
        Counts of computed, reused, resumed, removed and skipped images, seconds, images/s.

    Raises
    ------
    DatasetError, StoreError, ExportError, DeviceError, WeightsNotFoundError
        Bad input or store state; nothing already stored is lost.
    """
    check_resize(resize)
    _check_options(dtype, batch_size)
    layout = resolve_store(store)
    dataset = scan_dataset(data, name)
    recipe = resolve_recipe(backbone, weights=weights, input_size=input_size, layer=layer, pooling=pooling)
    run_id = new_run_id("extract")
    t0 = time.perf_counter()
    with track_emissions(emissions, country, layout.emissions, lazy=True) as tracker:
        job = _Extraction(
            layout, dataset, recipe, resize, dtype, batch_size, n_workers, n_threads, device, log
        )
        job.on_compute = tracker.begin
        path = layout.feature_set(f"{dataset.name}@{recipe.label}")
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
            "backbone": recipe.label,
            "backbone_digest": recipe.digest,
            "feature_set": result.feature_set,
            "device": result.device,
            "counts": {
                k: getattr(result, k)
                for k in ("n_images", "n_computed", "n_reused", "n_resumed", "n_removed", "n_skipped")
            },
            "seconds": result.seconds,
            "images_per_s": result.images_per_s,
            "energy_kwh": em.energy_kwh,
            "co2_kg": em.co2_kg,
            "emissions": em.to_dict(),
        },
    )
    return result


class _Extraction:
    """One extract run over one feature set, holding its lock."""

    def __init__(self, layout, dataset, recipe, resize, dtype, batch_size, n_workers, n_threads, device, log):
        self.layout: StoreLayout = layout
        self.dataset: Dataset = dataset
        self.recipe: BackboneRecipe = recipe
        self.resize, self.dtype, self.batch_size = resize, dtype, batch_size
        self.n_workers = n_workers or default_threads()
        self.n_threads = n_threads
        self.device = device
        self.log = log or (lambda msg: None)
        self.exported = None
        self.session = None
        self.writer: PartWriter | None = None
        self.setup_s = 0.0
        self.on_compute: Callable[[], None] = lambda: None

    @property
    def cache_tag(self) -> str:
        """What makes stored features reusable: the backbone export, the resize and the dtype."""
        return f"{self.recipe.digest}:{self.resize}:{self.dtype}"

    def _open_old(self, path, force: bool, source: FeatureSource):
        if force or not path.exists():
            return None, None
        reader = FeatureSetReader(path)
        a = reader.attrs
        found = f"{a.get('backbone_digest')}:{a.get('resize')}:{a.get('dtype')}"
        if found != self.cache_tag:
            reader.close()
            raise StoreMismatchError(
                f"{path.stem} holds features of another export or settings (backbone digest "
                f"{str(a.get('backbone_digest'))[:12]}, resize {a.get('resize')}, dtype {a.get('dtype')}) "
                f"than requested (digest {self.recipe.digest[:12]}, resize {self.resize}, dtype "
                f"{self.dtype}); pass --force to replace it, or --name to keep both"
            )
        rows = reader.rows()
        source.add_reader(reader, rows.digests)
        return rows, a

    def _compute(self, pixels: list[np.ndarray], digests: list[str], source: FeatureSource) -> None:
        if self.session is None:
            t0 = time.perf_counter()
            self.on_compute()
            self.session = open_session(
                self.exported.path, self.device, self.n_threads, self.layout.backbones / "trt-cache"
            )
            self.writer = PartWriter(parts_dir(self.path), self.cache_tag, self.dtype)
            self.setup_s = time.perf_counter() - t0
        feats = self.session.run(np.stack(pixels))
        bad = ~np.isfinite(feats).all(axis=1)
        if bad.any():
            raise StoreError(
                f"the backbone returned NaN or infinite features for {int(bad.sum())} images "
                f"(e.g. content {digests[int(np.argmax(bad))][:12]}); nothing was stored for them"
            )
        source.add_path(self.writer.write(digests, feats), digests)

    def run(self, path, force: bool, progress: Progress | None, run_id: str) -> ExtractResult:
        remove_stale_temporaries(path.parent, path.name)
        pdir = parts_dir(path)
        if force:
            clear_parts(pdir)
        from featstore.export import ensure_backbone

        self.exported = ensure_backbone(self.recipe, self.layout, self.log)
        source = FeatureSource()
        try:
            old_rows, old_attrs = self._open_old(path, force, source)
            n_old_sources = 1 if old_rows is not None else 0
            n_parts_rows = read_parts(pdir, self.cache_tag, self.dtype, source)
            known = frozenset(source.digests())
            self.path = path
            return self._run(
                path, source, old_rows, old_attrs, n_old_sources, n_parts_rows, known, progress, run_id
            )
        finally:
            source.close()

    def _run(self, path, source, old_rows, old_attrs, n_old, n_parts_rows, known, progress, run_id):
        ds = self.dataset
        skipped = list(ds.skipped)
        kept: list[tuple] = []
        batch_px: list[np.ndarray] = []
        batch_dg: list[str] = []
        pending: set[str] = set()
        total = len(ds.items)
        t0 = time.perf_counter()
        loaded_iter = load_images(
            ds.items,
            size_px=self.recipe.input_size,
            resize=self.resize,
            n_workers=self.n_workers,
            known_digests=known,
            max_ahead=max(2 * self.batch_size, 8 * self.n_workers),
        )
        for done, loaded in enumerate(loaded_iter, start=1):
            if loaded.error:
                skipped.append(Skipped(loaded.item.rel, loaded.error))
            else:
                kept.append((loaded.item, loaded.digest))
                if loaded.pixels is not None and loaded.digest not in pending:
                    pending.add(loaded.digest)
                    batch_px.append(loaded.pixels)
                    batch_dg.append(loaded.digest)
                    if len(batch_px) >= self.batch_size:
                        self._compute(batch_px, batch_dg, source)
                        batch_px, batch_dg = [], []
            if progress:
                progress(done, total)
        if batch_px:
            self._compute(batch_px, batch_dg, source)
        loop_s = time.perf_counter() - t0 - self.setup_s
        if not kept:
            reasons = "; ".join(f"{s.path}: {s.reason}" for s in skipped[:3])
            raise DatasetError(f"none of the {total} images of {ds.root} could be read ({reasons})")

        rows = FeatureRows(
            paths=[it.rel for it, _ in kept],
            labels=np.array([it.label for it, _ in kept], dtype=np.int32),
            digests=[d for _, d in kept],
            split=[it.split for it, _ in kept],
        )
        reused = sum(1 for d in rows.digests if d in known and n_old and source.source_of(d) == 0)
        resumed = sum(1 for d in rows.digests if d in known and not (n_old and source.source_of(d) == 0))
        old_pairs = set(zip(old_rows.paths, old_rows.digests, strict=True)) if old_rows is not None else set()
        new_pairs = set(zip(rows.paths, rows.digests, strict=True))
        n_removed = len(old_pairs - new_pairs)

        n_features, onnx_sha = self.exported.n_features, self.exported.onnx_sha256
        unchanged = (
            old_rows is not None
            and n_parts_rows == 0
            and not pending
            and old_rows.paths == rows.paths
            and old_rows.digests == rows.digests
            and old_rows.split == rows.split
            and np.array_equal(old_rows.labels, rows.labels)
            and list(old_attrs.get("class_names", [])) == ds.class_names
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
                "backbone": self.recipe.label,
                "backbone_name": self.recipe.name,
                "backbone_digest": self.recipe.digest,
                "onnx_sha256": onnx_sha,
                "recipe": self.recipe.to_dict(),
                "input_size": self.recipe.input_size,
                "resize": self.resize,
                "featstore_version": __version__,
                "created": (old_attrs or {}).get("created", now),
                "updated": now,
                "run_id": run_id,
            }
            write_feature_set(path, rows, source, n_features, self.dtype, attrs)
            source.close()
            clear_parts(parts_dir(path))
        n_computed = len(pending)
        return ExtractResult(
            feature_set=fs_name,
            path=str(path),
            dataset=ds.name,
            layout=ds.layout,
            backbone=self.recipe.label,
            backbone_digest=self.recipe.digest,
            weights=self.recipe.weights,
            input_size=self.recipe.input_size,
            n_features=n_features,
            dtype=self.dtype,
            device=self.session.device if self.session else None,
            n_images=len(rows),
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
        )
