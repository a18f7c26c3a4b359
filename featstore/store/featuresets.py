"""Feature set files: row-aligned features (N, D), labels, paths, digests, split and view, with
the recipe as attributes; read, written whole (temporary name, fsync, rename), checksummed,
locked."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featstore.errors import StoreError, UnknownFeatureSetError
from featstore.files import file_lock, lock_held, new_temp, sha256_file
from featstore.store.parts import FeatureSource, guarded_h5

#: 2 added the `view` column (files without it read as all views 0).
FORMAT_VERSION = 2
#: Columns every feature set file has; `view` is optional (absent in format 1 files).
COLUMNS = ("features", "labels", "paths", "digests", "split")
_STR = None  # h5py string dtype, created lazily
_COPY_ROWS = 4096


def _h5():
    import h5py

    return h5py


def _str_dtype():
    global _STR
    if _STR is None:
        _STR = _h5().string_dtype(encoding="utf-8")
    return _STR


def encode_path(rel: str) -> bytes:
    """Encode a relative path for HDF5 (UTF-8; undecodable file-name bytes kept as they were)."""
    return rel.encode("utf-8", "surrogateescape")


def decode_path(raw: bytes | str) -> str:
    """Inverse of `encode_path`."""
    return raw if isinstance(raw, str) else raw.decode("utf-8", "surrogateescape")


@dataclass
class FeatureRows:
    """Row metadata of a feature set: `digests` of each image file and `view` (n,) int16 (0 for the
    image itself, 1..N for its augmented views), so a path appears once per view."""

    paths: list[str]
    labels: np.ndarray
    digests: list[str]
    split: list[str]
    view: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.view is None:
            self.view = np.zeros(len(self.paths), dtype=np.int16)
        else:
            self.view = np.asarray(self.view, dtype=np.int16)

    def __len__(self) -> int:
        return len(self.paths)

    def take(self, idx: np.ndarray | None) -> FeatureRows:
        """The rows `idx` (int indices, in their order); all of them when None."""
        if idx is None:
            return self
        idx = np.asarray(idx, dtype=np.int64)
        pick = idx.tolist()
        return FeatureRows(
            paths=[self.paths[i] for i in pick],
            labels=np.asarray(self.labels)[idx],
            digests=[self.digests[i] for i in pick],
            split=[self.split[i] for i in pick],
            view=self.view[idx],
        )

    @staticmethod
    def concat(parts: list[FeatureRows]) -> FeatureRows:
        """The rows of `parts`, one after the other."""
        return FeatureRows(
            paths=[p for r in parts for p in r.paths],
            labels=np.concatenate([r.labels for r in parts]) if parts else np.zeros(0, np.int32),
            digests=[d for r in parts for d in r.digests],
            split=[s for r in parts for s in r.split],
            view=np.concatenate([r.view for r in parts]) if parts else np.zeros(0, np.int16),
        )


def rows_checksum(rows: FeatureRows) -> str:
    """SHA-256 over labels, paths, digests, split and views of every row (for `store verify`)."""
    h = hashlib.sha256()
    h.update(np.asarray(rows.labels, dtype=np.int32).tobytes())
    for p, d, s in zip(rows.paths, rows.digests, rows.split, strict=True):
        h.update(encode_path(p) + b"\0" + d.encode() + b"\0" + s.encode() + b"\n")
    if rows.view.any():  # all-zero views hash as format 1 did, so older files still verify
        h.update(b"view\0" + np.asarray(rows.view, dtype="<i2").tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------- reading


class FeatureSetReader:
    """Read access to one feature set file, as a context manager: `attrs` (JSON decoded) and
    `read_features(rows)`, (len(rows), n_features) in the stored dtype."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise UnknownFeatureSetError(f"no feature set file {self.path}")
        try:
            self._f = _h5().File(self.path, "r")
        except OSError as err:
            raise StoreError(
                f"{self.path} is damaged and cannot be opened ({err}); "
                "run `featstore store verify`, and `featstore extract --force` to rebuild it"
            ) from err
        missing = [c for c in COLUMNS if c not in self._f]
        if missing:
            self._f.close()
            raise StoreError(f"{self.path} lacks the columns {', '.join(missing)}: not a featstore file")
        self.attrs = {k: _attr(v) for k, v in self._f.attrs.items()}

    def __enter__(self) -> FeatureSetReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the file."""
        self._f.close()

    def __len__(self) -> int:
        return int(self._f["features"].shape[0])

    @property
    def features_dataset(self):
        """The open h5py dataset of the features, (N, D) (for `parts.FeatureSource`)."""
        return self._f["features"]

    @property
    def n_features(self) -> int:
        """Feature dimension D."""
        return int(self._f["features"].shape[1])

    @property
    def class_names(self) -> list[str]:
        """Class names; `labels` index this list (-1: unlabelled)."""
        return list(self.attrs.get("class_names", []))

    def rows(self) -> FeatureRows:
        """Return paths, labels, digests, split and view of every row (view 0 if not stored)."""
        f = self._f
        paths = [decode_path(p) for p in f["paths"][...]]
        view = f["view"][...] if "view" in f else np.zeros(len(paths), dtype=np.int16)
        return FeatureRows(
            paths=paths,
            labels=f["labels"][...].astype(np.int32),
            digests=[d.decode() for d in f["digests"][...]],
            split=[s.decode() for s in f["split"][...]],
            view=view.astype(np.int16),
        )

    def digests_column(self) -> np.ndarray:
        """The content digests of every row as an (N,) array of 64-byte hex strings (reads no feature)."""
        return self._f["digests"][...]

    def read_features(self, rows: np.ndarray | slice | None = None) -> np.ndarray:
        """Return features of `rows` (all when None): (n_rows, n_features)."""
        ds = self._f["features"]
        if rows is None:
            return ds[...]
        if isinstance(rows, slice):
            return ds[rows]
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            return np.empty((0, ds.shape[1]), ds.dtype)
        if rows.size * 64 > ds.shape[0]:  # many rows: read in order, block by block (bounded)
            return self._gather_blocks(ds, rows)
        order = np.argsort(rows, kind="stable")
        uniq, inverse = np.unique(rows[order], return_inverse=True)
        block = ds[uniq]
        out = np.empty((rows.size, ds.shape[1]), ds.dtype)
        out[order] = block[inverse]
        return out

    @staticmethod
    def _gather_blocks(ds, rows: np.ndarray) -> np.ndarray:
        """Rows `rows` of dataset `ds`, read in `_COPY_ROWS` blocks in file order: a sequential
        read, far faster than a point selection of many rows, one block in memory at a time."""
        out = np.empty((rows.size, ds.shape[1]), ds.dtype)
        order = np.argsort(rows, kind="stable")
        wanted = rows[order]
        for start in range(0, ds.shape[0], _COPY_ROWS):
            lo, hi = np.searchsorted(wanted, [start, start + _COPY_ROWS])
            if lo < hi:
                out[order[lo:hi]] = ds[start : start + _COPY_ROWS][wanted[lo:hi] - start]
        return out

    def iter_features(self, chunk_rows: int = _COPY_ROWS) -> Iterator[np.ndarray]:
        """Yield the features in row order, `chunk_rows` at a time (bounded memory)."""
        ds = self._f["features"]
        for start in range(0, ds.shape[0], chunk_rows):
            yield ds[start : start + chunk_rows]


def _attr(value):
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            return value
    if isinstance(value, np.generic):
        return value.item()
    return value


# ---------------------------------------------------------------- writing


def _create_columns(f, n: int, n_features: int, dtype: str) -> None:
    chunk = (max(1, min(n, max(1, (1 << 20) // max(1, n_features * 4)))), n_features) if n else None
    f.create_dataset("features", (n, n_features), dtype=dtype, chunks=chunk, fletcher32=bool(n))
    kw = {"fletcher32": True, "chunks": True} if n else {}
    f.create_dataset("labels", (n,), dtype="int32", **kw)
    f.create_dataset("digests", (n,), dtype="S64", **kw)
    f.create_dataset("split", (n,), dtype="S5", **kw)
    f.create_dataset("view", (n,), dtype="int16", **kw)
    f.create_dataset("paths", (n,), dtype=_str_dtype())


def _write_rows(f, rows: FeatureRows) -> None:
    if len(rows) == 0:
        return
    f["labels"][...] = np.asarray(rows.labels, dtype=np.int32)
    f["digests"][...] = np.array([d.encode() for d in rows.digests], dtype="S64")
    f["split"][...] = np.array([s.encode() for s in rows.split], dtype="S5")
    f["view"][...] = np.asarray(rows.view, dtype=np.int16)
    f["paths"][...] = np.array([encode_path(p) for p in rows.paths], dtype=object)


def _set_attrs(f, attrs: dict) -> None:
    for key, value in attrs.items():
        if value is None:
            continue
        if isinstance(value, (dict, list, tuple)):
            value = json.dumps(value)
        f.attrs[key] = value


def write_rows_file(
    f,
    rows: FeatureRows,
    read_block: Callable[[int, int], np.ndarray],
    n_features: int,
    dtype: str,
    attrs: dict,
) -> None:
    """Fill the open, empty HDF5 file `f` with `rows`, their features (`read_block(start, stop)`
    returns rows start..stop, (stop - start, n_features), called for blocks of `_COPY_ROWS`),
    `attrs` and the content checksums (`features_sha256`, `rows_sha256`)."""
    n = len(rows)
    h = hashlib.sha256()
    _create_columns(f, n, n_features, dtype)
    _write_rows(f, rows)
    for start in range(0, n, _COPY_ROWS):
        block = np.asarray(read_block(start, min(n, start + _COPY_ROWS)), dtype=dtype)
        f["features"][start : start + len(block)] = block
        h.update(np.ascontiguousarray(block).tobytes())
    full = dict(attrs)
    full.update(
        format_version=FORMAT_VERSION,
        n_rows=n,
        n_features=n_features,
        dtype=dtype,
        features_sha256=h.hexdigest(),
        rows_sha256=rows_checksum(rows),
    )
    _set_attrs(f, full)


def write_feature_set(
    path: Path,
    rows: FeatureRows,
    source: FeatureSource,
    n_features: int,
    dtype: str,
    attrs: dict,
    keys: list[str] | None = None,
) -> None:
    """Write a complete single-file feature set at `path` (the layout of earlier versions, read
    and converted by `store.shards`), atomically (the previous file stays until the new one is
    complete and fsynced); row i's features are `source`'s under `keys[i]` (default
    `rows.digests[i]`)."""
    keys = rows.digests if keys is None else keys
    if len(keys) != len(rows):
        raise StoreError(f"{len(keys)} cache keys for {len(rows)} rows: cannot write {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    state: dict = {}

    def accept_both(tmp: Path) -> None:
        state["new"] = file_sha256(tmp)
        previous = accepted_checksums(path)
        if path.exists() and not previous:
            previous = [file_sha256(path)]
        _write_checksums(path, [*previous, state["new"]])

    with guarded_h5(
        new_temp(path.parent, path.name), path, "the previous file is intact", before_replace=accept_both
    ) as f:
        write_rows_file(
            f, rows, lambda a, b: source.gather(keys[a:b], n_features, dtype), n_features, dtype, attrs
        )
    _write_checksums(path, [state["new"]])


def checksum_path(path: Path) -> Path:
    """The file holding the whole-file SHA-256 of feature set file `path`."""
    return path.with_name(path.name + ".sha256")


def file_sha256(path: Path) -> str:
    """Whole-file SHA-256, reading every byte (no memo)."""
    return sha256_file(path, cached=False)


def accepted_checksums(path: Path) -> list[str]:
    """Whole-file SHA-256 values `path` may have (two while a replacement is in flight)."""
    try:
        return checksum_path(path).read_text().split()
    except OSError:
        return []


def _write_checksums(path: Path, hashes: list[str]) -> None:
    """Atomically record the accepted whole-file checksums of `path` (old and new before the rename,
    the new only after it, so any kill leaves a checksum that matches the file)."""
    tmp = new_temp(path.parent, checksum_path(path).name)
    try:
        tmp.write_text("\n".join(dict.fromkeys(hashes)) + "\n")
        os.replace(tmp, checksum_path(path))
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_stale_temporaries(folder: Path, name: str) -> int:
    """Delete temporary files a killed writer of `name` left in `folder`; return how many."""
    n = 0
    for tmp in folder.glob(f".{name}.*.tmp"):
        tmp.unlink(missing_ok=True)
        n += 1
    return n


# ---------------------------------------------------------------- locking


def lock_path(path: Path) -> Path:
    """The lock file of feature set file `path`: `<name>.lock` beside it."""
    return path.with_suffix(".lock")


def feature_set_lock(path: Path, wait: bool = False, timeout_s: float | None = None):
    """Hold the writer lock `<name>.lock` of feature set `path`; StoreLockedError when another
    process holds it and `wait` is False (or `timeout_s` passed)."""
    return file_lock(lock_path(path), path.stem, wait=wait, timeout_s=timeout_s)


def is_locked(path: Path) -> bool:
    """True when a writer holds the lock of feature set file `path` right now."""
    return lock_held(lock_path(path))
