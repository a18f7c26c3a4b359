"""`extract --engine ray`: the images go through the cluster in waves. Ray workers compute each
wave and write its rows straight into the feature set's folder as shards; the driver commits a
version after each wave from the metadata they return (it never holds feature bytes), so a job
killed at any moment loses at most the wave in flight, and the next run goes on from there."""

from __future__ import annotations

import time
from pathlib import Path

from featstore.data.scan import Skipped
from featstore.extraction.rows import Computed, KeptImage, feature_set_attrs
from featstore.store import shards
from featstore.store.commits import StoredSet, clean_folder, commit_shards, compact, next_version
from featstore.store.shards import set_folder

#: Images per wave, at least ...
WAVE_IMAGES = 4096
#: ... or this many batches per actor, when that is more.
BATCHES_PER_WAVE = 64


def run_waves(run, path: Path, old: StoredSet | None, run_id: str) -> tuple[Computed, StoredSet | None]:
    """Compute and store every image of `run` not in `run.known` through its Ray engine, wave by
    wave; return what the loop saw and the set's state after the last wave. The caller holds
    the set's lock; `old` is the committed state before the run."""
    from featstore.inference.ray_engine import RunSpec, ShardSink

    engine = run.engine
    items = run.dataset.items
    folder = set_folder(path)
    old = _sharded(path, old)
    attrs = feature_set_attrs(run, old.attrs if old is not None else None, None, run_id)
    attrs.update(n_features=run.exported.n_features, dtype=run.dtype)
    computed = Computed(skipped=list(run.dataset.skipped))
    known = set(run.known)
    model = Path(run.variant.path).read_bytes()
    spec = RunSpec.of(run.variant, engine.runtime)
    ray_engine = engine.engine
    stored = old
    t0 = time.perf_counter()
    ray_engine.start()
    try:
        run.on_compute()
        run.session = engine.open(run)
        wave = max(WAVE_IMAGES, BATCHES_PER_WAVE * run.batch_size * ray_engine.n_actors)
        for start in range(0, len(items), wave):
            part = items[start : start + wave]
            version = next_version(folder, stored.manifest if stored is not None else None)
            sink = ShardSink.make(str(folder), f"shard-{version:08d}-", run.exported.n_features, run.dtype)
            seen, written = ray_engine.write_wave(
                part, run.recipe.size, run.decode.resize, model, frozenset(known), run.exported.n_features,
                spec, sink,
            )  # fmt: skip
            _record(computed, part, seen)
            new = [d for w in written for d in w["digests"]]
            computed.pending.update(new)
            if written:
                stored = commit_shards(path, stored, written, attrs, version)
                known.update(new)
            run.reporter.progress(start + len(part), len(items))
    finally:
        ray_engine.stop()
    computed.loop_s = time.perf_counter() - t0
    if not computed.kept:
        from featstore.errors import DatasetError

        reasons = "; ".join(f"{s.path}: {s.reason}" for s in computed.skipped[:3])
        raise DatasetError(f"none of the {len(items)} images of {run.dataset.root} could be read ({reasons})")
    return computed, stored


def _sharded(path: Path, old: StoredSet | None) -> StoredSet | None:
    """`old` as a sharded set (a single file of the earlier layout is linked in as shard 0), its
    folder made and cleaned of what a killed writer left."""
    folder = set_folder(path)
    folder.mkdir(parents=True, exist_ok=True)
    if old is not None and old.manifest is None:
        compact(path)
        with shards.open_set(path) as reader:
            old = StoredSet(reader.rows(), reader.attrs, old.keys, reader.manifest, path)
    clean_folder(folder, old.manifest if old is not None else None)
    return old


def _record(computed: Computed, part: list, seen: list[tuple]) -> None:
    """Add one wave's images to `computed`: each kept with its digest, or skipped with its reason."""
    for item, (digest, error) in zip(part, seen, strict=True):
        if error:
            computed.skipped.append(Skipped(item.rel, error))
        else:
            computed.kept.append(KeptImage(item, digest, [digest]))
            computed.hashed[item.rel] = digest
