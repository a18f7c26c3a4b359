"""Writing sharded feature sets (see `shards`): each version adds shards and a manifest, then
swaps `CURRENT`; nothing committed before is touched. Files no manifest names (a killed
writer's) are deleted by the next writer, which holds the set's lock. A single file of the
earlier layout becomes shard 0 of a sharded set (a hard link, no copy) on its first write or
compaction.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from featstore.errors import StoreError, UnknownFeatureSetError
from featstore.files import fsync_dir, new_temp, write_atomic
from featstore.store.featuresets import (
    FeatureRows,
    FeatureSetReader,
    accepted_checksums,
    checksum_path,
    file_sha256,
    write_rows_file,
)
from featstore.store.parts import guarded_h5
from featstore.store.shards import (
    CURRENT,
    Manifest,
    Shard,
    _live_rows,
    add_keys,
    read_manifest,
    rows_key,
    set_folder,
    shard_rows,
)

#: A shard under a quarter of the full size is small; past this many small ones a write merges them.
MAX_SMALL_SHARDS = 16
#: Attributes of a single file that describe that file, not the set (they are per shard).
_FILE_ONLY = ("format_version", "n_rows", "features_sha256", "rows_sha256")
_MANIFEST = re.compile(r"manifest-(\d{8})\.json")
_SHARD = re.compile(r"shard-\d{8}-\d{4,8}\.h5")


@dataclass
class StoredSet:
    """The committed version a writer starts from: its rows (dropped ones left out), their cache
    keys, attributes, manifest (None for a single file of the earlier layout) and path."""

    rows: FeatureRows
    attrs: dict
    keys: list[str]
    manifest: Manifest | None
    path: Path

    @property
    def rows_key(self) -> str:
        """The order-free checksum of the rows (recorded, or computed for a single file)."""
        if self.manifest is not None:
            return self.manifest.rows_key
        return rows_key(self.rows)


@dataclass
class Commit:
    """What a write did: the version committed, rows added and dropped, shards written and merged."""

    version: int
    n_added: int
    n_dropped: int
    n_shards_written: int
    n_shards_merged: int
    bytes_written: int


def _shard_entry(folder: Path, name: str, digests: list[str], sha: str | None = None) -> Shard:
    """The manifest entry of shard `name` holding rows of `digests` (its SHA-256 read unless given)."""
    path = folder / name
    return Shard(
        file=name,
        n_rows=len(digests),
        bytes=path.stat().st_size,
        sha256=sha or file_sha256(path),
        first_digest=min(digests, default=""),
        last_digest=max(digests, default=""),
    )


def write_shard(
    folder: Path,
    name: str,
    rows: FeatureRows,
    read_block: Callable[[int, int], np.ndarray],
    n_features: int,
    dtype: str,
) -> Shard:
    """Write one immutable shard `name` in `folder` (temporary name, fsync, rename); row i's
    features are `read_block(start, stop)`'s; return its manifest entry."""
    with guarded_h5(new_temp(folder, name), folder / name, "the committed version is intact") as f:
        write_rows_file(f, rows, read_block, n_features, dtype, {})
    return _shard_entry(folder, name, rows.digests)


def _commit(folder: Path, manifest: Manifest) -> None:
    """Write the manifest, point `CURRENT` at it (each atomically), then delete what no longer
    belongs to the set (`clean_folder`)."""
    write_atomic(folder / manifest.file, manifest.to_json())
    write_atomic(folder / CURRENT, (manifest.file + "\n").encode())
    fsync_dir(folder)
    clean_folder(folder, manifest)


def _set_attrs(attrs: dict) -> dict:
    """A set's attributes as a manifest keeps them: those that are None left out."""
    return {k: v for k, v in attrs.items() if v is not None}


def _written_bytes(shards: list[Shard], version: int) -> int:
    """Bytes of the shards written for `version`."""
    return sum(s.bytes for s in shards if s.file.startswith(f"shard-{version:08d}-"))


def clean_folder(folder: Path, manifest: Manifest | None) -> int:
    """Delete what no committed manifest needs: shards `manifest` does not name, older manifests
    and temporary files of killed writers. Only a writer holding the set's lock may call it.
    Returns the number of files removed."""
    if not folder.is_dir():
        return 0
    keep = {manifest.file, *(s.file for s in manifest.shards)} if manifest is not None else set()
    n = 0
    for p in folder.iterdir():
        ours = _SHARD.fullmatch(p.name) or _MANIFEST.fullmatch(p.name) or p.name.endswith(".tmp")
        if ours and p.name not in keep:
            p.unlink(missing_ok=True)
            n += 1
    return n


def _adopt_single_file(path: Path, folder: Path) -> Shard:
    """Make the single-file set `path` shard 0 of `folder`: a hard link (a copy where links are
    not possible), its whole-file checksum taken from its `.sha256` file when that names one."""
    name = "shard-00000000-0000.h5"
    target = folder / name
    target.unlink(missing_ok=True)
    try:
        os.link(path, target)
    except OSError:
        tmp = new_temp(folder, name)
        shutil.copyfile(path, tmp)
        os.replace(tmp, target)
    accepted = accepted_checksums(path)
    with FeatureSetReader(target) as r:
        digests = [d.decode() for d in r.digests_column()]
    return _shard_entry(folder, name, digests, accepted[0] if len(accepted) == 1 else None)


def commit_rows(
    path: Path,
    rows: FeatureRows,
    keys: list[str],
    source,
    attrs: dict,
    stored: StoredSet | None,
) -> Commit | None:
    """Make `rows` (features from `source`, a `parts.FeatureSource`, under `keys`) the set's next
    version: rows already stored stay where they are, rows gone are dropped, new rows go into
    new shards; small shards are merged past `MAX_SMALL_SHARDS`. The caller holds the set's
    lock. Returns None when the stored version already is exactly this (nothing written)."""
    folder = set_folder(path)
    n_features, dtype = int(attrs["n_features"]), str(attrs["dtype"])
    manifest = stored.manifest if stored is not None else None
    if stored is not None:
        new, dropped = _diff(stored, rows, keys)
        same_attrs = all(stored.attrs.get(k) == attrs.get(k) for k in ("class_names", "augment"))
        key = rows_key(rows)
        if not new and not dropped and same_attrs and stored.rows_key == key:
            return None
    else:
        new, dropped, key = list(range(len(rows))), [], rows_key(rows)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        current = read_manifest(folder)
    except StoreError:  # damaged, and replaced (only a run with --force gets here)
        current = None
    clean_folder(folder, current)
    version = next_version(folder, manifest)
    shards: list[Shard] = []
    if stored is not None and manifest is None:  # a single file of the earlier layout
        shards = [_adopt_single_file(stored.path, folder)]
    elif manifest is not None:
        shards = [Shard(**asdict(s)) for s in manifest.shards]
    _drop(shards, dropped)
    written = _write_new(folder, rows, keys, new, source, version, n_features, dtype)
    shards = [s for s in shards if s.n_live] + written
    shards, n_merged = _merge_small(folder, shards, version, n_features, dtype, len(written))
    _commit(folder, Manifest(version, _set_attrs(attrs), shards, key))
    if stored is not None and manifest is None:
        path.unlink(missing_ok=True)
        checksum_path(path).unlink(missing_ok=True)
    return Commit(version, len(new), len(dropped), len(written), n_merged, _written_bytes(shards, version))


def append_rows(
    path: Path,
    manifest: Manifest,
    rows: FeatureRows,
    keys: list[str],
    source,
    attrs: dict,
) -> Commit:
    """Commit a version of the set at `path` that adds `rows` (features from `source` under
    `keys`) to `manifest`'s in new shards, reading no stored row: the cost is that of the new
    rows alone. The caller holds the lock and knows the rows are new (not stored yet)."""
    folder = set_folder(path)
    n_features, dtype = int(attrs["n_features"]), str(attrs["dtype"])
    clean_folder(folder, manifest)
    version = next_version(folder, manifest)
    written = _write_new(folder, rows, keys, list(range(len(rows))), source, version, n_features, dtype)
    shards = [Shard(**asdict(s)) for s in manifest.shards] + written
    shards, n_merged = _merge_small(folder, shards, version, n_features, dtype, len(written))
    key = add_keys(manifest.rows_key, rows_key(rows))
    _commit(folder, Manifest(version, _set_attrs(attrs), shards, key))
    return Commit(version, len(rows), 0, len(written), n_merged, _written_bytes(shards, version))


def _write_new(folder, rows, keys, new: list[int], source, version, n_features, dtype) -> list[Shard]:
    """Write rows `new` of `rows` (features from `source` under `keys`) as full shards of `version`."""
    written: list[Shard] = []
    per = shard_rows(n_features, dtype)
    for k, start in enumerate(range(0, len(new), per)):
        idx = new[start : start + per]
        part = rows.take(idx)
        part_keys = [keys[i] for i in idx]
        name = f"shard-{version:08d}-{k:04d}.h5"
        written.append(
            write_shard(
                folder, name, part, lambda a, b, ks=part_keys: source.gather(ks[a:b], n_features, dtype),
                n_features, dtype,
            )
        )  # fmt: skip
    return written


def next_version(folder: Path, manifest: Manifest | None) -> int:
    """The version number the next commit after `manifest` of the set in `folder` takes: above
    every manifest there, even one a killed writer left (shards written for it are named
    `shard-<version>-*.h5`)."""
    mine = manifest.version if manifest is not None else 0
    return 1 + max(mine, _last_version(folder) if folder.is_dir() else 0)


def commit_shards(
    path: Path, stored: StoredSet | None, written: list[dict], attrs: dict, version: int
) -> StoredSet:
    """Commit `version`: the stored rows and the shards others wrote (`written`: each a dict of
    the shard's manifest `entry` and its rows' `paths`, `labels`, `digests` and `split`), nothing
    dropped. The caller holds the lock and wrote the shards as `shard-<version>-*.h5`. Returns
    the new stored state (cache keys: the digests; no augmented views)."""
    folder = set_folder(path)
    new = FeatureRows(
        paths=[p for w in written for p in w["paths"]],
        labels=np.array([x for w in written for x in w["labels"]], dtype=np.int32),
        digests=[d for w in written for d in w["digests"]],
        split=[x for w in written for x in w["split"]],
    )
    old_shards = [Shard(**asdict(s)) for s in stored.manifest.shards] if stored and stored.manifest else []
    rows = FeatureRows.concat([stored.rows, new]) if stored is not None else new
    manifest = Manifest(
        version, _set_attrs(attrs), old_shards + [w["entry"] for w in written], rows_key(rows)
    )
    _commit(folder, manifest)
    keys = (stored.keys if stored is not None else []) + new.digests
    return StoredSet(rows, manifest.attrs, keys, manifest, path)


def _last_version(folder: Path) -> int:
    found = [int(m.group(1)) for p in folder.iterdir() if (m := _MANIFEST.fullmatch(p.name))]
    return max(found, default=0)


def _diff(stored: StoredSet, rows: FeatureRows, keys: list[str]) -> tuple[list[int], list[int]]:
    """(rows of the plan not stored as they are, stored rows not in the plan)."""

    def ident(r: FeatureRows, ks: list[str]):
        return zip(r.paths, r.view.tolist(), ks, r.labels.tolist(), r.split, strict=True)

    have = {t: i for i, t in enumerate(ident(stored.rows, stored.keys))}
    new, kept = [], set()
    for j, t in enumerate(ident(rows, keys)):
        i = have.get(t)
        if i is None:
            new.append(j)
        else:
            kept.add(i)
    return new, [i for i in range(len(stored.rows)) if i not in kept]


def _drop(shards: list[Shard], dropped: list[int]) -> None:
    """Add set rows `dropped` (indices into the stored rows, shards in order) to their shards'
    dropped lists."""
    if not dropped:
        return
    lives = [_live_or_all(s) for s in shards]
    ends = np.cumsum([len(live) for live in lives])
    starts = ends - [len(live) for live in lives]
    for i in dropped:
        k = int(np.searchsorted(ends, i, side="right"))
        shards[k].dropped.append(int(lives[k][i - starts[k]]))
    for s in shards:
        s.dropped.sort()


def _merge_small(
    folder: Path, shards: list[Shard], version: int, n_features: int, dtype: str, first_k: int
) -> tuple[list[Shard], int]:
    """Merge the small shards into full ones when there are more than `MAX_SMALL_SHARDS`."""
    per = shard_rows(n_features, dtype)
    small = [i for i, s in enumerate(shards) if s.n_rows < per // 4]
    if len(small) <= MAX_SMALL_SHARDS:
        return shards, 0
    merged = rewrite_shards(folder, [shards[i] for i in small], version, first_k, n_features, dtype)
    rest = [s for i, s in enumerate(shards) if i not in set(small)]
    return rest + merged, len(small)


def rewrite_shards(
    folder: Path, shards: list[Shard], version: int, first_k: int, n_features: int, dtype: str
) -> list[Shard]:
    """Copy the live rows of `shards` (in order) into new full shards named for `version`,
    numbered from `first_k`; return their entries. Reads in bounded blocks."""
    readers = [FeatureSetReader(folder / s.file) for s in shards]
    try:
        where = [(i, r) for i, s in enumerate(shards) for r in _live_or_all(s).tolist()]
        all_rows = [rd.rows() for rd in readers]
        per = shard_rows(n_features, dtype)
        out = []
        for k, start in enumerate(range(0, len(where), per)):
            chunk = where[start : start + per]
            part = FeatureRows.concat(
                [all_rows[i].take([r for j, r in chunk if j == i]) for i in _order(chunk)]
            )
            src = np.asarray(chunk, dtype=np.int64).reshape(-1, 2)

            def read_block(a: int, b: int, src=src) -> np.ndarray:
                block = src[a:b]
                out_b = np.empty((len(block), n_features), dtype=dtype)
                for i in np.unique(block[:, 0]):
                    sel = np.flatnonzero(block[:, 0] == i)
                    out_b[sel] = readers[int(i)].read_features(block[sel, 1])
                return out_b

            name = f"shard-{version:08d}-{first_k + k:04d}.h5"
            out.append(write_shard(folder, name, part, read_block, n_features, dtype))
        return out
    finally:
        for rd in readers:
            rd.close()


def _live_or_all(s: Shard) -> np.ndarray:
    live = _live_rows(s)
    return np.arange(s.n_rows) if live is None else live


def _order(chunk: list[tuple[int, int]]) -> list[int]:
    """Shard indices of `chunk` in first-seen order (chunks run through shards in order)."""
    return list(dict.fromkeys(i for i, _ in chunk))


def compact(path: Path) -> Commit | None:
    """Rewrite the shards that have dropped rows or are not full (when there are two or more,
    or any has dropped rows) into full shards, and convert a single file of the earlier layout
    (a hard link, no copy). The caller holds the lock. None when there was nothing to do."""
    folder = set_folder(path)
    manifest = read_manifest(folder)
    if manifest is None:
        if not path.is_file():
            raise UnknownFeatureSetError(f"no feature set at {path}")
        folder.mkdir(parents=True, exist_ok=True)
        clean_folder(folder, None)
        with FeatureSetReader(path) as r:
            rows, attrs = r.rows(), dict(r.attrs)
        attrs = {k: v for k, v in attrs.items() if k not in _FILE_ONLY}
        manifest = Manifest(0, attrs, [_adopt_single_file(path, folder)], rows_key(rows))
    else:
        clean_folder(folder, manifest)
    n_features, dtype = int(manifest.attrs["n_features"]), str(manifest.attrs["dtype"])
    per = shard_rows(n_features, dtype)
    todo = [i for i, s in enumerate(manifest.shards) if s.dropped or s.n_rows < per]
    if len(todo) < 2 and not any(manifest.shards[i].dropped for i in todo):
        todo = []
    if not todo and manifest.version:
        return None
    version = next_version(folder, manifest)
    merged = rewrite_shards(folder, [manifest.shards[i] for i in todo], version, 0, n_features, dtype)
    shards = [s for i, s in enumerate(manifest.shards) if i not in set(todo)] + merged
    _commit(folder, Manifest(version, manifest.attrs, shards, manifest.rows_key))
    if path.is_file():
        path.unlink(missing_ok=True)
        checksum_path(path).unlink(missing_ok=True)
    n_dropped = sum(len(manifest.shards[i].dropped) for i in todo)
    return Commit(version, 0, n_dropped, len(merged), len(todo), sum(s.bytes for s in merged))
