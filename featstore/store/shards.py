"""Sharded feature sets: a folder `features/<dataset>@<backbone>/` of immutable HDF5 shards (each
in the feature set file format of `featuresets`), one JSON manifest per version, and `CURRENT`,
the name of the committed manifest, replaced atomically.

A write adds shards and a manifest and then swaps `CURRENT`; nothing committed before is
touched. Rows of files that are gone are listed as `dropped` in the manifest until `compact`
rewrites their shard. Files no manifest names (a killed writer's) are deleted by the next
writer, which holds the set's lock. A set in the single-file layout of earlier versions
(`<name>.h5`) still reads, and becomes shard 0 of a sharded set (a hard link, no copy) on its
first write.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
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
from featstore.store.layout import StoreLayout
from featstore.store.parts import guarded_h5

CURRENT = "CURRENT"
MANIFEST_FORMAT = 1
#: Feature bytes a shard holds at most (1 280 float32 features: 52 428 rows).
SHARD_BYTES = 256 * 2**20
#: A shard under a quarter of the full size is small; past this many small ones a write merges them.
MAX_SMALL_SHARDS = 16
_MANIFEST = re.compile(r"manifest-(\d{8})\.json")
_SHARD = re.compile(r"shard-\d{8}-\d{4,8}\.h5")
#: Attributes of a single file that describe that file, not the set (they are per shard).
_FILE_ONLY = ("format_version", "n_rows", "features_sha256", "rows_sha256")


def set_folder(path: Path) -> Path:
    """The folder of the sharded set whose single-file path (the earlier layout) is `path`."""
    return path.with_suffix("")


def shard_rows(n_features: int, dtype: str) -> int:
    """Rows a full shard holds: `SHARD_BYTES` of features, at least 1 024."""
    return max(1024, SHARD_BYTES // max(1, n_features * np.dtype(dtype).itemsize))


# ---------------------------------------------------------------- manifest


@dataclass
class Shard:
    """One shard file of a version: rows, bytes, whole-file SHA-256, the smallest and largest
    content digest it holds, and the rows `dropped` from the set (files gone)."""

    file: str
    n_rows: int
    bytes: int
    sha256: str
    first_digest: str
    last_digest: str
    dropped: list[int] = field(default_factory=list)

    @property
    def n_live(self) -> int:
        """Rows of this shard that belong to the set."""
        return self.n_rows - len(self.dropped)


@dataclass
class Manifest:
    """One committed version of a sharded set: its attributes (those of a feature set file),
    shards in row order, and `rows_key`, an order-free checksum of the set's rows (`rows_key`)."""

    version: int
    attrs: dict
    shards: list[Shard]
    rows_key: str
    format: int = MANIFEST_FORMAT

    @property
    def n_rows(self) -> int:
        """Rows of the set (dropped rows not counted)."""
        return sum(s.n_live for s in self.shards)

    @property
    def file(self) -> str:
        """The manifest's file name in the set's folder."""
        return f"manifest-{self.version:08d}.json"

    def to_json(self) -> bytes:
        """The manifest as UTF-8 JSON."""
        return json.dumps(asdict(self), indent=1, default=str).encode()

    @classmethod
    def from_dict(cls, doc: dict) -> Manifest:
        """Inverse of `to_json` (decoded)."""
        if doc.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"manifest format {doc.get('format')!r}, this featstore reads {MANIFEST_FORMAT}")
        shards = [Shard(**s) for s in doc["shards"]]
        return cls(int(doc["version"]), dict(doc["attrs"]), shards, str(doc["rows_key"]))


#: rows_key is a sum of per-row SHA-256 values modulo 2^256: a multiset hash, so rows added or
#: dropped change it by their own sum, and no order matters.
_KEY_MOD = 1 << 256


def rows_key(rows: FeatureRows) -> str:
    """The set-of-rows checksum of `rows`: the sum modulo 2^256 of the SHA-256 of each row's
    (path, view, content digest, label, split), in hex. Equal for the same rows in any order, so
    a run compares its plan with a version without reading it, and an append updates it from
    the new rows alone (`add_keys`)."""
    return rows_key_of(rows.paths, rows.view.tolist(), rows.digests, rows.labels.tolist(), rows.split)


def rows_key_of(paths, views, digests, labels, splits) -> str:
    """`rows_key` of rows given as columns (iterables of equal length)."""
    sha, whole = hashlib.sha256, int.from_bytes
    total = sum(
        whole(sha(f"{p}\0{v}\0{d}\0{lab}\0{s}".encode("utf-8", "surrogateescape")).digest())
        for p, v, d, lab, s in zip(paths, views, digests, labels, splits, strict=True)
    )
    return f"{total % _KEY_MOD:064x}"


def add_keys(a: str, b: str) -> str:
    """The `rows_key` of the rows of `a` and those of `b` together."""
    return f"{(int(a, 16) + int(b, 16)) % _KEY_MOD:064x}"


def read_manifest(folder: Path) -> Manifest | None:
    """The committed manifest of the set in `folder`; None when none was committed. StoreError
    for a damaged manifest."""
    for _ in range(8):
        try:
            name = (folder / CURRENT).read_text().strip()
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            return Manifest.from_dict(json.loads((folder / name).read_text()))
        except FileNotFoundError:
            continue  # a writer committed and cleaned between the two reads: read CURRENT again
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise StoreError(
                f"the manifest {folder / name} is damaged ({err}); run `featstore store verify`"
            ) from err
    raise StoreError(f"{folder} changed under this reader eight times in a row; try again")


def is_sharded(path: Path) -> bool:
    """True when the set whose single-file path is `path` has a committed sharded version."""
    return (set_folder(path) / CURRENT).is_file()


def exists(path: Path) -> bool:
    """True when the set whose single-file path is `path` exists, in either layout."""
    return is_sharded(path) or path.is_file()


def set_stamp(path: Path) -> dict:
    """What changes whenever the set at `path` changes: its manifest version and row checksum, or
    the single file's size and mtime."""
    manifest = read_manifest(set_folder(path))
    if manifest is not None:
        return {"version": manifest.version, "rows_key": manifest.rows_key}
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def stored_attrs(path: Path) -> dict | None:
    """The attributes of the set at `path` (either layout); None when absent or unreadable."""
    try:
        if is_sharded(path):
            return read_manifest(set_folder(path)).attrs
        if path.is_file():
            with FeatureSetReader(path) as r:
                return r.attrs
    except (StoreError, OSError, KeyError, ValueError):
        return None
    return None


# ---------------------------------------------------------------- reading


class ShardedReader:
    """Read access to one version of a sharded set, with the interface of `FeatureSetReader`:
    `attrs`, `rows()`, `read_features(rows)` and `iter_features(chunk_rows)` over the set's
    rows (shards in order, dropped rows left out). Every shard is opened at once, so a writer
    that deletes them later does not disturb this reader."""

    def __init__(self, folder: Path, manifest: Manifest):
        self.path = folder
        self.manifest = manifest
        self.readers: list[FeatureSetReader] = []
        try:
            for s in manifest.shards:
                self.readers.append(FeatureSetReader(folder / s.file))
        except BaseException:
            self.close()
            raise
        self._live = [_live_rows(s) for s in manifest.shards]
        self._ends = np.cumsum([s.n_live for s in manifest.shards], dtype=np.int64)
        self.attrs = {**manifest.attrs, "n_rows": manifest.n_rows, "version": manifest.version}

    def __enter__(self) -> ShardedReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close every shard."""
        for r in self.readers:
            with contextlib.suppress(Exception):
                r.close()

    def __len__(self) -> int:
        return self.manifest.n_rows

    @property
    def n_features(self) -> int:
        """Feature dimension D."""
        return int(self.attrs["n_features"])

    @property
    def class_names(self) -> list[str]:
        """Class names; `labels` index this list (-1: unlabelled)."""
        return list(self.attrs.get("class_names", []))

    def rows(self) -> FeatureRows:
        """Return paths, labels, digests, split and view of every row of the set."""
        parts = [_take(r.rows(), live) for r, live in zip(self.readers, self._live, strict=True)]
        return _concat(parts)

    def digests_column(self) -> np.ndarray:
        """The content digests of the set's rows, (N,) 64-byte hex strings; reads no feature."""
        cols = [r.digests_column() for r in self.readers]
        cols = [c if live is None else c[live] for c, live in zip(cols, self._live, strict=True)]
        return np.concatenate(cols) if cols else np.empty(0, dtype="S64")

    def shard_rows(self) -> Iterator[tuple[FeatureSetReader, FeatureRows]]:
        """Each open shard with all its rows (dropped ones too): what a writer may reuse."""
        for r in self.readers:
            yield r, r.rows()

    def _locate(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(shard index, row in the shard file) of each set row in `rows`."""
        shard = np.searchsorted(self._ends, rows, side="right")
        starts = np.concatenate([[0], self._ends[:-1]])
        local = rows - starts[shard]
        for i, live in enumerate(self._live):
            if live is not None:
                sel = shard == i
                local[sel] = live[local[sel]]
        return shard, local

    def read_features(self, rows: np.ndarray | slice | None = None) -> np.ndarray:
        """Return features of set rows `rows` (all when None): (n_rows, n_features)."""
        n = len(self)
        if rows is None:
            rows = slice(0, n)
        if isinstance(rows, slice):
            rows = np.arange(n)[rows]
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((rows.size, self.n_features), dtype=self.attrs.get("dtype", "float32"))
        if rows.size == 0:
            return out
        if rows.min() < 0 or rows.max() >= n:
            raise IndexError(f"rows outside 0..{n - 1} of {self.path.name}")
        shard, local = self._locate(rows)
        for i in np.unique(shard):
            sel = np.flatnonzero(shard == i)
            out[sel] = self.readers[i].read_features(local[sel])
        return out

    def iter_features(self, chunk_rows: int = 4096) -> Iterator[np.ndarray]:
        """Yield the set's features in row order, at most `chunk_rows` rows at a time."""
        for r, live in zip(self.readers, self._live, strict=True):
            for block_start in range(0, len(r), chunk_rows):
                block = r.read_features(slice(block_start, block_start + chunk_rows))
                if live is not None:
                    keep = live[(live >= block_start) & (live < block_start + chunk_rows)]
                    block = block[keep - block_start]
                if len(block):
                    yield block


def _live_rows(shard: Shard) -> np.ndarray | None:
    """The live row indices of a shard file; None when every row is live."""
    if not shard.dropped:
        return None
    return np.setdiff1d(np.arange(shard.n_rows), np.asarray(shard.dropped, dtype=np.int64))


def _take(rows: FeatureRows, live: np.ndarray | None) -> FeatureRows:
    if live is None:
        return rows
    idx = live.tolist()
    return FeatureRows(
        paths=[rows.paths[i] for i in idx],
        labels=rows.labels[live],
        digests=[rows.digests[i] for i in idx],
        split=[rows.split[i] for i in idx],
        view=rows.view[live],
    )


def _concat(parts: list[FeatureRows]) -> FeatureRows:
    return FeatureRows(
        paths=[p for r in parts for p in r.paths],
        labels=np.concatenate([r.labels for r in parts]) if parts else np.zeros(0, np.int32),
        digests=[d for r in parts for d in r.digests],
        split=[s for r in parts for s in r.split],
        view=np.concatenate([r.view for r in parts]) if parts else np.zeros(0, np.int16),
    )


def open_set(path: Path, name: str | None = None) -> ShardedReader | FeatureSetReader:
    """Open the set whose single-file path is `path`: the committed sharded version, else the
    single file. UnknownFeatureSetError when neither exists."""
    folder = set_folder(path)
    for _ in range(8):
        manifest = read_manifest(folder)
        if manifest is None:
            return FeatureSetReader(path)
        try:
            return ShardedReader(folder, manifest)
        except UnknownFeatureSetError:
            if read_manifest(folder) == manifest:  # the shard is missing, not replaced: damage
                missing = [s.file for s in manifest.shards if not (folder / s.file).is_file()]
                raise StoreError(
                    f"{folder.name} lacks its shard(s) {', '.join(missing[:3])}; run `featstore store "
                    "verify`, and `featstore extract --force` to rebuild it"
                ) from None
    raise StoreError(f"{folder} changed under this reader eight times in a row; try again")


def feature_set_names(layout: StoreLayout) -> list[str]:
    """Names of the feature sets of the store, in either layout, sorted."""
    if not layout.features.is_dir():
        return []
    names = {p.stem for p in layout.features.glob("*.h5")}
    names |= {p.parent.name for p in layout.features.glob(f"*/{CURRENT}")}
    return sorted(names)


def open_feature_set(layout: StoreLayout, name: str) -> ShardedReader | FeatureSetReader:
    """Open feature set `name` (`dataset@backbone`) for reading, in either layout;
    UnknownFeatureSetError listing the ones there are."""
    path = layout.feature_set(name)
    if not exists(path):
        have = feature_set_names(layout)
        raise UnknownFeatureSetError(
            f"no feature set {name!r} in {layout.root}; "
            + (f"there are: {', '.join(have)}" if have else "the store has none yet (run featstore extract)")
        )
    return open_set(path)


# ---------------------------------------------------------------- writing


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


def _shard_entry(folder: Path, name: str, digests: np.ndarray, n_rows: int, sha: str | None = None) -> Shard:
    path = folder / name
    return Shard(
        file=name,
        n_rows=n_rows,
        bytes=path.stat().st_size,
        sha256=sha or file_sha256(path),
        first_digest=(min(digests.tolist()).decode() if n_rows else ""),
        last_digest=(max(digests.tolist()).decode() if n_rows else ""),
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
    digests = np.array([d.encode() for d in rows.digests], dtype="S64")
    return _shard_entry(folder, name, digests, len(rows))


def _commit(folder: Path, manifest: Manifest) -> None:
    """Write the manifest, then point `CURRENT` at it (each atomically)."""
    write_atomic(folder / manifest.file, manifest.to_json())
    write_atomic(folder / CURRENT, (manifest.file + "\n").encode())
    fsync_dir(folder)


def clean_folder(folder: Path, manifest: Manifest | None) -> int:
    """Delete what no committed manifest needs: shards `manifest` does not name, older manifests
    and temporary files of killed writers. Only a writer holding the set's lock may call it.
    Returns the number of files removed."""
    if not folder.is_dir():
        return 0
    keep = {CURRENT} if manifest is not None else set()
    if manifest is not None:
        keep |= {manifest.file, *(s.file for s in manifest.shards)}
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
        digests = r.digests_column()
        return _shard_entry(folder, name, digests, len(r), accepted[0] if len(accepted) == 1 else None)


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
        if not new and not dropped and same_attrs and stored.rows_key == rows_key(rows):
            return None
    else:
        new, dropped = list(range(len(rows))), []
    folder.mkdir(parents=True, exist_ok=True)
    try:
        current = read_manifest(folder)
    except StoreError:  # damaged, and replaced (only a run with --force gets here)
        current = None
    clean_folder(folder, current)
    version = 1 + max((manifest.version if manifest is not None else 0), _last_version(folder))
    shards: list[Shard] = []
    if stored is not None and manifest is None:  # a single file of the earlier layout
        shards = [_adopt_single_file(stored.path, folder)]
    elif manifest is not None:
        shards = [Shard(**asdict(s)) for s in manifest.shards]
    _drop(shards, dropped)
    written = _write_new(folder, rows, keys, new, source, version, n_features, dtype)
    shards = [s for s in shards if s.n_live] + written
    shards, n_merged = _merge_small(folder, shards, version, n_features, dtype, len(written))
    full = {k: v for k, v in attrs.items() if v is not None}
    _commit(folder, Manifest(version, full, shards, rows_key(rows)))
    clean_folder(folder, read_manifest(folder))
    if stored is not None and manifest is None:
        path.unlink(missing_ok=True)
        checksum_path(path).unlink(missing_ok=True)
    n_bytes = sum(s.bytes for s in shards if s.file.startswith(f"shard-{version:08d}-"))
    return Commit(version, len(new), len(dropped), len(written), n_merged, n_bytes)


def append_rows(
    path: Path, manifest: Manifest, rows: FeatureRows, keys: list[str], source, attrs: dict
) -> Commit:
    """Commit a version of the set at `path` that adds `rows` (features from `source` under
    `keys`) to `manifest`'s in new shards, reading no stored row: the cost is that of the new
    rows alone. The caller holds the lock and knows the rows are new (not stored yet)."""
    folder = set_folder(path)
    n_features, dtype = int(attrs["n_features"]), str(attrs["dtype"])
    clean_folder(folder, manifest)
    version = next_version(folder, None)
    version = max(version, manifest.version + 1)
    written = _write_new(folder, rows, keys, list(range(len(rows))), source, version, n_features, dtype)
    shards = [Shard(**asdict(s)) for s in manifest.shards] + written
    shards, n_merged = _merge_small(folder, shards, version, n_features, dtype, len(written))
    full = {k: v for k, v in attrs.items() if v is not None}
    _commit(folder, Manifest(version, full, shards, add_keys(manifest.rows_key, rows_key(rows))))
    clean_folder(folder, read_manifest(folder))
    n_bytes = sum(s.bytes for s in shards if s.file.startswith(f"shard-{version:08d}-"))
    return Commit(version, len(rows), 0, len(written), n_merged, n_bytes)


def _write_new(folder, rows, keys, new: list[int], source, version, n_features, dtype) -> list[Shard]:
    """Write rows `new` of `rows` (features from `source` under `keys`) as full shards of `version`."""
    written: list[Shard] = []
    per = shard_rows(n_features, dtype)
    for k, start in enumerate(range(0, len(new), per)):
        idx = new[start : start + per]
        part = _take(rows, np.asarray(idx, dtype=np.int64))
        part_keys = [keys[i] for i in idx]
        name = f"shard-{version:08d}-{k:04d}.h5"
        written.append(
            write_shard(
                folder, name, part, lambda a, b, ks=part_keys: source.gather(ks[a:b], n_features, dtype),
                n_features, dtype,
            )
        )  # fmt: skip
    return written


def next_version(folder: Path, stored: StoredSet | None) -> int:
    """The version number the next commit of the set in `folder` takes (shards written for it are
    named `shard-<version>-*.h5`)."""
    mine = stored.manifest.version if stored is not None and stored.manifest is not None else 0
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
    rows = _concat([stored.rows, new]) if stored is not None else new
    full = {k: v for k, v in attrs.items() if v is not None}
    manifest = Manifest(version, full, old_shards + [w["entry"] for w in written], rows_key(rows))
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
            part = _concat(
                [
                    _take(all_rows[i], np.asarray([r for j, r in chunk if j == i], dtype=np.int64))
                    for i in _order(chunk)
                ]
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
    version = max(manifest.version, _last_version(folder)) + 1
    merged = rewrite_shards(folder, [manifest.shards[i] for i in todo], version, 0, n_features, dtype)
    shards = [s for i, s in enumerate(manifest.shards) if i not in set(todo)] + merged
    _commit(folder, Manifest(version, manifest.attrs, shards, manifest.rows_key))
    clean_folder(folder, read_manifest(folder))
    if path.is_file():
        path.unlink(missing_ok=True)
        checksum_path(path).unlink(missing_ok=True)
    n_dropped = sum(len(manifest.shards[i].dropped) for i in todo)
    return Commit(version, 0, n_dropped, len(merged), len(todo), sum(s.bytes for s in merged))
