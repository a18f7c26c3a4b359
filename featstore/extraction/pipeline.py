"""One extract run: the model at its precision, what is stored already, and the loop that reads,
decodes and computes only what is new, a part file per batch."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np

from featstore.backbones.export import ensure_backbone
from featstore.backbones.recipes import BackboneRecipe
from featstore.data.augment import augment as augment_pixels
from featstore.data.augment import row_keys, view_key, view_seed
from featstore.data.decode import LoadedImage, load_images, resolve_decoder
from featstore.data.options import AugmentConfig
from featstore.data.scan import Dataset, ImageItem, Skipped, paused_gc
from featstore.data.views import n_views as arrays_per_image
from featstore.data.views import parse_views, view_stack, views_digest
from featstore.errors import DatasetError, StoreError, StoreMismatchError
from featstore.extraction.options import ExtractSettings
from featstore.extraction.result import ExtractResult
from featstore.extraction.rows import Computed, KeptImage, finish, finish_append, plan_rows, unchanged_result
from featstore.extraction.waves import run_waves
from featstore.files import sha256_file
from featstore.inference.devices import (
    CPU_BATCH,
    GPU_PROBE,
    TRT_MAX_BATCH,
    choose_batch_size,
    default_threads,
    engine_cached,
)
from featstore.inference.precision import prepare_model
from featstore.inference.profiling import StageTimes
from featstore.inference.runtimes import Target
from featstore.inference.variants import ModelVariant
from featstore.reporter import SILENT, Reporter
from featstore.store import shards
from featstore.store.commits import StoredSet
from featstore.store.featuresets import remove_stale_temporaries
from featstore.store.layout import StoreLayout
from featstore.store.parts import FeatureSource, PartWriter, clear_parts, has_parts, parts_dir, read_parts
from featstore.store.statcache import StatCache, cache_path

#: Files the stat cache does not trust that a run hashes before deciding it has nothing to do.
QUICK_HASH = 1000


class Extraction:
    """One extract run over one feature set (the caller holds its lock), computing on `target`.
    Without `engine` this process decodes and runs one session; an engine replaces both
    (`load(run, items)`, `open(run)`). `on_compute()` is called before the first batch."""

    def __init__(
        self,
        layout: StoreLayout,
        dataset: Dataset,
        recipe: BackboneRecipe,
        settings: ExtractSettings,
        target: Target,
        *,
        engine=None,
        reporter: Reporter = SILENT,
    ):
        self.layout, self.dataset, self.recipe = layout, dataset, recipe
        self.settings, self.target = settings, target
        self.decode = replace(settings.decode, decoder=resolve_decoder(settings.decode.decoder))
        self.inference = settings.inference
        self.dtype = settings.options.dtype
        self.precision = settings.precision.precision
        self.augment: AugmentConfig | None = settings.augment.config()
        self.views: tuple[str, ...] = parse_views(settings.options.views)
        self.batch_size = settings.inference.batch_or(CPU_BATCH)
        self.n_workers = settings.decode.n_workers or default_threads()
        self.engine = engine
        self.reporter = reporter
        self.on_compute: Callable[[], None] = lambda: None
        self.path: Path | None = None
        self.exported = None
        self.variant: ModelVariant | None = None
        self.session = None
        self.writer: PartWriter | None = None
        self.known: frozenset[str] = frozenset()
        self.cached: dict[str, str] = {}
        self.computed_hashed: dict[str, str] = {}
        self.setup_s = 0.0
        self.times = StageTimes(n_workers=self.n_workers)
        self._views_for_all = not dataset.has_split

    # ------------------------------------------------------------ cache keys and views

    @property
    def cache_tag(self) -> str:
        """What makes stored features reusable: the model (export and precision), resize, dtype."""
        return f"{self.digest}:{self.decode.resize}:{self.dtype}"

    @property
    def digest(self) -> str:
        """The digest the feature set records: the model variant's (changed by test-time views)."""
        return views_digest(self.variant.digest, self.views)

    @property
    def per_row(self) -> int:
        """Arrays run through the backbone per stored row: 1, or the image and its test-time views."""
        return arrays_per_image(self.views) if self.views else 1

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
        """The (key, pixels) of each augmented view of `item` not yet stored, or with test-time
        views the image's one row: its digest and the stack of the image and its views (decode
        threads)."""
        if self.views:
            return [] if digest in self.known else [(digest, view_stack(pixels, self.views))]
        cfg = self.augment
        out = []
        for v in range(1, self.n_views(item) + 1):
            key = view_key(digest, v, cfg)
            if key not in self.known:
                out.append((key, augment_pixels(pixels, cfg, view_seed(digest, v, cfg.seed))))
        return out

    # ------------------------------------------------------------ the run

    def run(self, path: Path, run_id: str) -> ExtractResult:
        """Bring the feature set at `path` (its single-file path; see `store.shards`) up to date
        with the dataset; return what was done. DatasetError when no image could be read
        (nothing written); StoreError or StoreMismatchError when the stored set is damaged or
        made by another model."""
        force = self.settings.options.force
        remove_stale_temporaries(path.parent, path.name)
        if force:
            clear_parts(parts_dir(path))
        self.path = path
        self._prepare_model(path, force)
        items = self.dataset.items
        stat = StatCache(cache_path(self.layout, self.dataset.root), rehash=self.settings.options.rehash)
        owner = shards.set_folder(path).name
        with paused_gc():
            stat.stat_files(items)
            scan = stat.scan_key(items, owner) if self.augment is None else None
        manifest = None if force else shards.read_manifest(shards.set_folder(path))
        if manifest is not None:
            quick = self._quick(manifest, path, run_id, stat, scan, owner)
            if quick is not None:
                return quick
        elif self.engine is None:
            with paused_gc():
                self.cached = stat.lookup(items)
        reader = None if force or not shards.exists(path) else shards.open_set(path)
        source = FeatureSource()
        try:
            if reader is not None and manifest is None:  # a single file: its attributes unchecked yet
                self._check_old_attrs(path, reader.attrs)
            old = None if reader is None else self._open_old(path, reader, source)
            n_parts_rows = read_parts(parts_dir(path), self.cache_tag, self.dtype, source)
            self.known = frozenset(source.digests())
            stored = old
            if self.engine is None:
                computed = self._read_and_compute(source)
            else:
                computed, stored = run_waves(self, path, old, run_id)
            result = finish(self, path, source, old, n_parts_rows, computed, run_id, stored)
            self.computed_hashed.update(computed.hashed)
            self._remember(stat, path, result, scan, owner)
            return result
        finally:
            source.close()
            if reader is not None:
                reader.close()

    def _quick(
        self,
        manifest: shards.Manifest,
        path: Path,
        run_id: str,
        stat: StatCache,
        scan: str | None,
        owner: str,
    ) -> ExtractResult | None:
        """The result of a run decided without opening the stored set: nothing to do (from the
        recorded scan, or from the digests and the manifest), or new files appended beside the
        stored ones; None otherwise, `self.cached` then holding every digest known."""
        self._check_old_attrs(path, manifest.attrs)
        items = self.dataset.items
        stored = None
        with paused_gc():
            quick = self._recorded(manifest, path, run_id, stat.recorded(owner, scan, items))
            if quick is not None:  # decided from one hash of the stats
                return quick
            self.cached = stat.lookup(items) if self.engine is None else {}
            known = self._known_digests()
            quick = self._unchanged(manifest, path, run_id, known)
            if quick is None:
                stored = self._stored_part(manifest, path, stat, owner)
        if stored is not None:
            quick = self._append(manifest, path, run_id, *stored)
        if quick is not None:
            self._remember(stat, path, quick, scan, owner)
        elif known is not None:  # the loop reads none of the files just hashed again
            self.cached = known
        return quick

    def _remember(
        self, stat: StatCache, path: Path, result: ExtractResult, scan: str | None, owner: str
    ) -> None:
        """Record in the stat cache the digests this run computed and its scan: the set's
        `rows_key` now and the files that could not be read (never a failed run)."""
        record = None
        if scan is not None:
            try:
                manifest = shards.read_manifest(shards.set_folder(path))
            except StoreError:
                manifest = None
            if manifest is not None:
                listed = {s.path for s in self.dataset.skipped}
                unread = [[s.path, s.reason] for s in result.skipped if s.path not in listed]
                record = (owner, scan, manifest.rows_key, unread)
        stat.remember(self.computed_hashed, present={i.rel for i in self.dataset.items}, scan=record)

    def _prepare_model(self, path: Path, force: bool) -> None:
        """Export the backbone (once) and get its model at the requested precision."""
        self.exported = ensure_backbone(self.recipe, self.layout, self.reporter)
        stored = None if force else shards.stored_attrs(path)
        self.variant = prepare_model(
            self.exported,
            self.settings.precision,
            self.layout,
            self.target,
            dataset=self.dataset,
            decode=self.decode,
            prefer=(stored or {}).get("backbone_digest"),
            reporter=self.reporter,
        )

    def _known_digests(self) -> dict[str, str] | None:
        """The digest of every image: the stat cache's, and the few files it does not trust
        (touched, racy, new: at most `QUICK_HASH`) hashed now; None when there are more, or one
        cannot be read (the loop then reads and reports them)."""
        untrusted = [it for it in self.dataset.items if it.rel not in self.cached]
        if len(untrusted) > QUICK_HASH:
            return None
        known = dict(self.cached)
        for it in untrusted:
            try:
                known[it.rel] = self.computed_hashed[it.rel] = sha256_file(it.path, cached=False)
            except OSError:
                return None
        return known

    def _recorded(
        self, manifest: shards.Manifest, path: Path, run_id: str, record: tuple | None
    ) -> ExtractResult | None:
        """The result of a run with nothing to do, decided from the stat cache's `record` of this
        scan (`StatCache.recorded`: the set's rows_key and the files that could not be read)
        and the manifest: no digest, image or shard read. None when it does not decide."""
        if record is None or record[0] != manifest.rows_key or not self._same_plan_attrs(manifest, path):
            return None
        unread = [Skipped(rel, reason) for rel, reason in record[1]]
        n_images = len(self.dataset.items) - len(unread)
        skipped = [*self.dataset.skipped, *unread]
        return unchanged_result(self, path, skipped, run_id, None, n_images, n_images)

    def _same_plan_attrs(self, manifest: shards.Manifest, path: Path) -> bool:
        """True when the stored set's classes and augmentation are the run's and no part files
        wait (a killed run's computed rows are committed by a full run)."""
        augment = self.augment.to_dict() if self.augment is not None else None
        a = manifest.attrs
        same = a.get("class_names") == self.dataset.class_names and a.get("augment") == augment
        return same and not has_parts(parts_dir(path))

    def _unchanged(
        self, manifest: shards.Manifest, path: Path, run_id: str, known: dict[str, str] | None
    ) -> ExtractResult | None:
        """The result of a run with nothing to do, decided from the digests `known` (see
        `_known_digests`) and the manifest alone (no session, no shard opened); None when that
        cannot be decided so (digests missing, parts waiting)."""
        items = self.dataset.items
        if known is None or not self._same_plan_attrs(manifest, path):
            return None
        if self.augment is None:  # one row per image, keyed by its digest: no row objects made
            n_rows = len(items)
            same = (
                n_rows == manifest.n_rows and shards.rows_key_of(*_columns(items, known)) == manifest.rows_key
            )
        else:
            kept = [KeptImage(it, d, self.keys(it, d)) for it in items for d in (known[it.rel],)]
            n_rows = sum(len(k.keys) for k in kept)
            same = n_rows == manifest.n_rows and shards.rows_key(plan_rows(kept)[0]) == manifest.rows_key
        if not same:
            return None
        skipped = list(self.dataset.skipped)
        augment = manifest.attrs.get("augment")
        return unchanged_result(self, path, skipped, run_id, augment, len(items), n_rows)

    def _stored_part(
        self, manifest: shards.Manifest, path: Path, stat: StatCache, owner: str
    ) -> tuple[list[ImageItem], list[Skipped]] | None:
        """(new files, stored files that could not be read) when the files the stat cache
        trusts are exactly the stored rows (a recorded scan of them says so, or their rows_key)
        and the others are new; None otherwise."""
        items, cached = self.dataset.items, self.cached
        if self.augment is not None or self.views or has_parts(parts_dir(path)):
            return None
        trusted = [it for it in items if it.rel in cached]
        if not trusted or len(trusted) == len(items):
            return None
        record = stat.recorded(owner, stat.scan_key(trusted, owner), trusted)
        if record is not None and record[0] == manifest.rows_key:
            unread = [Skipped(rel, reason) for rel, reason in record[1]]
        elif shards.rows_key_of(*_columns(trusted, cached)) == manifest.rows_key:
            unread = []
        else:
            return None
        return [it for it in items if it.rel not in cached], unread

    def _append(
        self, manifest: shards.Manifest, path: Path, run_id: str, new: list[ImageItem], unread: list[Skipped]
    ) -> ExtractResult:
        """Compute the `new` files alone and commit them beside the stored shards, reading no
        stored row (adding 10 images to a million costs 10 images)."""
        n_stored = len(self.dataset.items) - len(new) - len(unread)
        source = FeatureSource()
        try:
            self.known = frozenset()  # a new file with a stored image's bytes is computed again
            computed = self._read_and_compute(source, new)
            computed.skipped.extend(unread)
            self.computed_hashed = computed.hashed
            if not computed.kept:  # none of the new files could be read: nothing to add
                return unchanged_result(self, path, computed.skipped, run_id, None, n_stored, n_stored)
            n_images = n_stored + len(computed.kept)
            return finish_append(self, path, manifest, source, computed, run_id, n_images)
        finally:
            source.close()

    def _open_old(self, path: Path, reader, source: FeatureSource) -> StoredSet:
        """The stored set's rows and cache keys, every stored row made available to `source`."""
        if isinstance(reader, shards.ShardedReader):
            for shard, rows in reader.shard_rows():
                source.add_reader(shard, _old_keys(path, rows, reader.attrs))
        rows = reader.rows()
        keys = _old_keys(path, rows, reader.attrs)
        if not isinstance(reader, shards.ShardedReader):
            source.add_reader(reader, keys)
        return StoredSet(rows, reader.attrs, keys, getattr(reader, "manifest", None), path)

    def _check_old_attrs(self, path: Path, a: dict) -> None:
        found = f"{a.get('backbone_digest')}:{a.get('resize')}:{a.get('dtype')}"
        if found == self.cache_tag:
            return
        raise StoreMismatchError(
            f"{path.stem} holds features of another export or settings (backbone digest "
            f"{str(a.get('backbone_digest'))[:12]}, precision {a.get('precision', 'fp32')}, resize "
            f"{a.get('resize')}, dtype {a.get('dtype')}) than requested (digest {self.variant.digest[:12]}, "
            f"precision {self.precision}, resize {self.decode.resize}, dtype {self.dtype}); pass --force to "
            "replace it, or --name to keep both"
        )

    def _read_and_compute(self, source: FeatureSource, items: list | None = None) -> Computed:
        """Read every image (of `items`, default the dataset's), compute the rows not stored yet,
        batch by batch, into part files. DatasetError when none of the dataset's could be read."""
        items = self.dataset.items if items is None else items
        total = len(items)
        out = Computed(skipped=list(self.dataset.skipped))
        batch_px: list[np.ndarray] = []
        batch_keys: list[str] = []
        t0 = t_wait = time.perf_counter()
        for done, loaded in enumerate(self._loaded_images(items), start=1):
            self._add_times(loaded, t_wait)
            if loaded.digest is not None and loaded.item.rel not in self.cached:
                out.hashed[loaded.item.rel] = loaded.digest
            if loaded.error:
                out.skipped.append(Skipped(loaded.item.rel, loaded.error))
            else:
                out.kept.append(KeptImage(loaded.item, loaded.digest, self.keys(loaded.item, loaded.digest)))
                for key, pixels in self._todo(loaded):
                    if key in out.pending:
                        continue
                    out.pending.add(key)
                    batch_px.append(pixels)
                    batch_keys.append(key)
                    if len(batch_px) * self.per_row >= self.batch_size:
                        self._compute(batch_px, batch_keys, source, total - done + len(batch_px))
                        batch_px, batch_keys = [], []
            self.reporter.progress(done, total)
            t_wait = time.perf_counter()
        if batch_px:
            self._compute(batch_px, batch_keys, source, len(batch_px))
        out.loop_s = time.perf_counter() - t0 - self.setup_s
        self._close_times(out)
        if not out.kept and len(items) == len(self.dataset.items):
            reasons = "; ".join(f"{s.path}: {s.reason}" for s in out.skipped[:3])
            raise DatasetError(f"none of the {total} images of {self.dataset.root} could be read ({reasons})")
        return out

    def _todo(self, loaded: LoadedImage) -> list[tuple[str, np.ndarray]]:
        """The (cache key, pixels) of the rows of one image that are not stored yet; with test-time
        views the one row `make_views` stacked (its features: their mean)."""
        todo = list(loaded.views)
        if not self.views and loaded.pixels is not None and loaded.digest not in self.known:
            todo.insert(0, (loaded.digest, loaded.pixels))
        return todo

    def _loaded_images(self, items: list) -> Iterator[LoadedImage]:
        """`items` in order, read, hashed and (when new) decoded."""
        return load_images(
            items,
            size_px=self.recipe.size,
            resize=self.decode.resize,
            n_workers=self.n_workers,
            is_known=self.is_known,
            make_views=self.make_views if self.augment is not None or self.views else None,
            max_ahead=self._max_ahead(),
            decoder=self.decode.decoder,
            cached=self.cached,
        )

    def _max_ahead(self) -> int:
        """Images in flight: a batch or two ahead of inference, fewer with augmented views."""
        device = self.target.device if self.engine is None else self.inference.device.replace("auto", "cpu")
        if device == "cpu":
            biggest = self.batch_size
        else:
            biggest = TRT_MAX_BATCH if device == "tensorrt" else GPU_PROBE[-1]
        ahead = max(2 * (biggest if self.inference.batch_auto else self.batch_size), 8 * self.n_workers)
        if self.augment is not None:
            ahead = max(2 * self.n_workers, ahead // (1 + self.augment.copies))
        if self.views:
            ahead = max(2 * self.n_workers, ahead // self.per_row)
        return ahead

    def _add_times(self, loaded: LoadedImage, t_wait: float) -> None:
        times = self.times
        times.wait_s += time.perf_counter() - t_wait
        times.read_s += loaded.read_s
        times.decode_s += loaded.decode_s

    def _close_times(self, computed: Computed) -> None:
        times = self.times
        if self.session is not None:
            times.transfer_s, times.inference_s = self.session.transfer_s, self.session.inference_s
            times.device = self.session.device
            times.runtime = getattr(self.session, "runtime", None)
        times.n_images, times.wall_s, times.setup_s = len(computed.pending), computed.loop_s, self.setup_s

    # ------------------------------------------------------------ inference

    def _compute(self, pixels: list[np.ndarray], keys: list[str], source: FeatureSource, n_todo: int) -> None:
        """Run one batch through the session and write it as a part file."""
        if self.session is None:
            self._open_session(n_todo)
        if self.views:  # each row the mean of its image's views
            feats = self.session.run(np.concatenate(pixels))
            feats = feats.reshape(len(pixels), self.per_row, -1).mean(axis=1, dtype=np.float64)
            feats = feats.astype(np.float32)
        else:
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

    def _open_session(self, n_todo: int) -> None:
        """Open the session (and with batch size auto, pick it) at the first batch."""
        t0 = time.perf_counter()
        self.on_compute()
        self.session = self._local_session()
        if self.inference.batch_auto:
            self.batch_size = choose_batch_size(self.session, self.recipe.size, n_todo)
        self.writer = PartWriter(parts_dir(self.path), self.cache_tag, self.dtype)
        self.setup_s = time.perf_counter() - t0

    def _local_session(self):
        target, model = self.target, self.variant.path
        runtime, device = target.runtime_of(self.variant), target.device
        if device == "tensorrt" and self.precision == "fp16":
            model = self.exported.path  # TensorRT picks its fp16 kernels from the fp32 graph
        trt_dir, prefix = self.layout.backbones / "trt-cache", f"{self.variant.path.stem}-trt"
        if device == "tensorrt":
            self.reporter.log(
                f"reusing the TensorRT engine in {trt_dir}"
                if engine_cached(trt_dir, prefix)
                else f"building the TensorRT engine (the first build takes minutes; cached in {trt_dir})"
            )
        return runtime.open(
            model,
            device,
            self.inference.n_threads or default_threads(),
            precision=self.precision,
            settings=self.variant.settings,
            trt_cache_dir=trt_dir,
            trt_prefix=prefix,
        )


def _columns(items: list[ImageItem], digests: dict[str, str]) -> tuple:
    """(paths, views, digests, labels, splits) of the rows of `items`, one plain row each, with
    their digests from `digests` (by relative path): what `shards.rows_key_of` takes."""
    _, rels, labels, splits = zip(*items, strict=True)
    return rels, [0] * len(items), [digests[r] for r in rels], labels, splits


def _old_keys(path: Path, rows, attrs: dict) -> list[str]:
    """Cache keys of the rows of an existing feature set (views keyed by its stored config)."""
    try:
        old_config = AugmentConfig.from_dict(attrs["augment"]) if attrs.get("augment") else None
        return row_keys(rows.digests, rows.view, old_config)
    except (KeyError, TypeError, ValueError, AttributeError, StoreError) as err:
        raise StoreError(
            f"{path.stem} holds augmented views without a readable augmentation config ({err}); "
            "pass --force to rebuild it"
        ) from err
