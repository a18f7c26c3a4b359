"""After the loop: the feature set's rows ordered by (path, view), each reused, resumed or
computed, a new version committed only when something changed, and the `ExtractResult`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from featstore.data.scan import ImageItem, Skipped
from featstore.data.views import views_label
from featstore.extraction.result import ExtractResult
from featstore.inference.precision import accuracy_warning, precision_label, runtime_warning, speed_warning
from featstore.store.commits import StoredSet, append_rows, commit_rows
from featstore.store.featuresets import FeatureRows
from featstore.store.parts import FeatureSource, clear_parts, parts_dir
from featstore.store.shards import set_folder


@dataclass
class KeptImage:
    """A readable image of the dataset: its item, content digest and the cache keys of its rows."""

    item: ImageItem
    digest: str
    keys: list[str]


@dataclass
class Computed:
    """What the loop saw: readable images, skipped files, keys computed, the digests it hashed
    ({relative path: digest}, for the stat cache), seconds."""

    kept: list[KeptImage] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    pending: set[str] = field(default_factory=set)
    hashed: dict[str, str] = field(default_factory=dict)
    loop_s: float = 0.0


def plan_rows(kept: list[KeptImage]) -> tuple[FeatureRows, list[str]]:
    """The rows of the new feature set and their cache keys, one row per key of each image."""
    keys = [k for image in kept for k in image.keys]
    rows = FeatureRows(
        paths=[im.item.rel for im in kept for _ in im.keys],
        labels=np.array([im.item.label for im in kept for _ in im.keys], dtype=np.int32),
        digests=[im.digest for im in kept for _ in im.keys],
        split=[im.item.split for im in kept for _ in im.keys],
        view=np.array([v for im in kept for v in range(len(im.keys))], dtype=np.int16),
    )
    return rows, keys


def count_rows(
    rows: FeatureRows, keys: list[str], known: frozenset, old: StoredSet | None
) -> tuple[int, int, int]:
    """(reused, resumed, removed): rows stored before, rows from parts, and stored rows dropped."""
    old_keys = set(old.keys) if old is not None else set()
    reused = sum(1 for k in keys if k in old_keys)
    resumed = sum(1 for k in keys if k in known and k not in old_keys)
    if old is None:
        return reused, resumed, 0
    old_pairs = set(zip(old.rows.paths, old.rows.view.tolist(), old.keys, strict=True))
    new_pairs = set(zip(rows.paths, rows.view.tolist(), keys, strict=True))
    return reused, resumed, len(old_pairs - new_pairs)


def feature_set_attrs(run, old_attrs: dict | None, augment: dict | None, run_id: str) -> dict:
    """The attributes of the new feature set file (see `store.featuresets`)."""
    from featstore import __version__

    ds, recipe, now = run.dataset, run.recipe, time.strftime("%Y-%m-%dT%H:%M:%S%z")
    width = {} if recipe.input_width is None else {"input_width": recipe.input_width}
    return {
        "dataset": ds.name,
        "layout": ds.layout,
        "data_root": str(ds.root),
        "class_names": ds.class_names,
        "backbone": views_label(precision_label(recipe.label, run.precision), run.views),
        "backbone_name": recipe.name,
        "backbone_digest": run.digest,
        **({"views": list(run.views)} if run.views else {}),
        "onnx_sha256": run.exported.onnx_sha256,
        "precision": run.precision,
        "base_digest": run.exported.digest,
        "model": run.variant.describe(),
        "recipe": recipe.to_dict(),
        "input_size": recipe.input_size,
        **width,
        "resize": run.decode.resize,
        "augment": augment,
        "featstore_version": __version__,
        "created": (old_attrs or {}).get("created", now),
        "updated": now,
        "run_id": run_id,
    }


def finish(
    run,
    path: Path,
    source: FeatureSource,
    old: StoredSet | None,
    n_parts_rows: int,
    computed: Computed,
    run_id: str,
    stored: StoredSet | None = None,
) -> ExtractResult:
    """Commit the feature set's next version when its rows changed, clear its parts, return the
    result. `old` is the version the run started from, `stored` the one it commits on (another
    when Ray waves committed theirs)."""
    rows, keys = plan_rows(computed.kept)
    reused, resumed, removed = count_rows(rows, keys, run.known, old)
    augment = run.augment.to_dict() if run.augment is not None else None
    attrs = feature_set_attrs(run, old.attrs if old is not None else None, augment, run_id)
    attrs.update(n_features=run.exported.n_features, dtype=run.dtype)
    committed = commit_rows(path, rows, keys, source, attrs, stored if stored is not None else old)
    written = committed is not None or stored is not old
    source.close()
    if written or n_parts_rows:
        clear_parts(parts_dir(path))
    counts = dict(n_views=int((rows.view > 0).sum()), n_reused=reused, n_resumed=resumed, n_removed=removed)
    return _result(run, path, computed, run_id, augment, written=written, **counts)


def finish_append(
    run,
    path: Path,
    manifest,
    source: FeatureSource,
    computed: Computed,
    run_id: str,
    n_images: int,
) -> ExtractResult:
    """Commit the rows `computed` found beside the stored ones (`append_rows`), clear the parts,
    return the result; `n_images` counts the stored images too."""
    rows, keys = plan_rows(computed.kept)
    attrs = feature_set_attrs(run, manifest.attrs, None, run_id)
    attrs.update(n_features=run.exported.n_features, dtype=run.dtype)
    append_rows(path, manifest, rows, keys, source, attrs)
    source.close()
    clear_parts(parts_dir(path))
    n_reused = n_images - len(rows)
    return _result(
        run, path, computed, run_id, None, written=True, n_views=0, n_reused=n_reused, n_resumed=0,
        n_removed=0, n_images=n_images,
    )  # fmt: skip


def unchanged_result(
    run, path: Path, skipped: list[Skipped], run_id: str, augment: dict | None, n_images: int, n_rows: int
) -> ExtractResult:
    """The result of a run that found every row stored as it is (nothing read or written)."""
    computed = Computed(skipped=skipped)
    return _result(
        run, path, computed, run_id, augment, written=False, n_views=n_rows - n_images, n_reused=n_rows,
        n_resumed=0, n_removed=0, n_images=n_images,
    )  # fmt: skip


def _result(
    run, path: Path, computed: Computed, run_id: str, augment: dict | None, **counts
) -> ExtractResult:
    """The ExtractResult of `run`; `counts` gives n_views, n_reused, n_resumed, n_removed, written
    (and n_images, default the images the loop kept)."""
    counts.setdefault("n_images", len(computed.kept))
    ds, n_computed, loop_s, v = run.dataset, len(computed.pending), computed.loop_s, run.variant
    warnings = [w for w in (accuracy_warning(v), speed_warning(v), runtime_warning(v)) if w]
    return ExtractResult(
        feature_set=path.stem,
        path=str(set_folder(path)),
        dataset=ds.name,
        layout=ds.layout,
        backbone=views_label(precision_label(run.recipe.label, run.precision), run.views),
        backbone_digest=run.digest,
        weights=run.recipe.weights,
        input_size=run.recipe.input_size,
        n_features=run.exported.n_features,
        dtype=run.dtype,
        device=run.session.device if run.session else None,
        n_computed=n_computed,
        n_skipped=len(computed.skipped),
        seconds=0.0,
        images_per_s=round(n_computed / loop_s, 2) if n_computed and loop_s > 0 else None,
        class_names=ds.class_names,
        run_id=run_id,
        skipped=computed.skipped,
        empty_classes=ds.empty_classes,
        augment=augment,
        precision=run.precision,
        decoder=run.decode.decoder,
        batch_size=run.batch_size if run.session is not None else None,
        precision_check=run.variant.check,
        calibration=run.variant.calibration,
        warnings=warnings,
        profile=run.times.to_dict() if n_computed else None,
        runtime=getattr(run.session, "runtime", None),
        **counts,
    )
