"""Sharded feature sets, their format and reading: a folder `features/<dataset>@<backbone>/` of
immutable HDF5 shards (each in the feature set file format of `featuresets`), one JSON manifest
per version, and `CURRENT`, the name of the committed manifest, replaced atomically.

The set's rows are the shards' rows in order, less those the manifest lists as `dropped` (files
gone, until `commits.compact` rewrites their shard). A set in the single-file layout of earlier
versions (`<name>.h5`) still reads; `commits` writes versions, converts single files and cleans.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from featstore.errors import StoreError, UnknownFeatureSetError
from featstore.store.featuresets import (
    FeatureRows,
    FeatureSetReader,
)
from featstore.store.layout import StoreLayout

CURRENT = "CURRENT"
MANIFEST_FORMAT = 1
#: Feature bytes a shard holds at most (1 280 float32 features: 52 428 rows).
SHARD_BYTES = 256 * 2**20


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
    shards in row order, and `rows_key`, an order-free checksum of the set's rows that adds up
    (`rows_key`)."""

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
        return FeatureRows.concat(
            [r.rows().take(live) for r, live in zip(self.readers, self._live, strict=True)]
        )

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
